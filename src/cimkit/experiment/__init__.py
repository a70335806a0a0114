"""Experiments: config file, variant-kind registry, runner.

Variant kinds live with their concern (``cimkit.quant.variants``, ``cimkit.analog.variants``, ...) and
register themselves in :data:`VARIANTS` when imported; importing this package imports them all.
"""

from cimkit.experiment import fp32  # noqa: F401  (registers the fp32 kind)
from cimkit.experiment.config import ExperimentConfig, VariantSpec, load_experiment
from cimkit.experiment.context import RunContext
from cimkit.experiment.plugins import load_variant_plugins
from cimkit.experiment.runner import run_experiment
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult

load_variant_plugins()

__all__ = [
    "VARIANTS", "ExperimentConfig", "RunContext", "Variant", "VariantResult", "VariantSpec",
    "load_experiment", "run_experiment",
]  # fmt: skip
