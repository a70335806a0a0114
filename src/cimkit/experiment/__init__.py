"""Experiments: config file, variant-kind registry, pipelines, runner.

Variant kinds, pipeline steps and evaluation protocols live with their concern and register
themselves when the concern's plugin module is imported (:func:`cimkit.plugins.load_plugins`, run
by the registries before their first lookup); the runner knows none of them by name.
"""

from cimkit.experiment import fp32  # noqa: F401  (registers the fp32 kind)
from cimkit.experiment.config import ExperimentConfig, VariantSpec, load_experiment
from cimkit.experiment.context import RunContext
from cimkit.experiment.pipeline import EVALS, STEPS, EvalProtocol, PipelineState, Step, run_pipeline
from cimkit.experiment.runner import run_experiment
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult

__all__ = [
    "EVALS", "STEPS", "VARIANTS", "EvalProtocol", "ExperimentConfig", "PipelineState", "RunContext", "Step",
    "Variant", "VariantResult", "VariantSpec", "load_experiment", "run_experiment", "run_pipeline",
]  # fmt: skip
