"""Robustness methods (a registry users extend), the ``robust_train`` step and the ``weight_noise``
evaluation protocol.

::

    steps = [{ op = "robust_train", method = "noise_aware", level = 0.02, epochs = 50, lr = 1e-4 }]
    eval = { protocol = "weight_noise", levels = [0.0, 0.01, 0.02], repeats = 5 }

A method is ``fn(state, ctx, cfg, step) -> None`` registered with ``@METHODS.register("name", "what it
does")``; it changes ``state.model`` (typically: transform, fine-tune with ``ctx.finetune`` under
``step.tag`` / ``step.cache_key`` so the result is cached, undo the transform). ``cfg`` is the step's
:class:`RobustTrainConfig` (its ``options`` table carries a user method's own settings).

``weight_noise``: for each of ``repeats`` seeds and each relative level ``σ`` of ``levels``, every
weighted layer's weight gets ``σ · s · N(0, 1)`` (:func:`cimkit.robust.noise.perturbed_weights`,
``s`` per ``relative``) and the test set is evaluated; metrics are the mean and std over seeds of
the task's primary metric at every level (``psnr_w1pct``, ``psnr_w1pct_std``, ...), the headline
the one at ``report_level``. Level 0 is evaluated once (it is deterministic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import RunContext
from cimkit.experiment.pipeline import EVALS, STEPS, EvalProtocol, PipelineState, Step
from cimkit.registry import Registry
from cimkit.robust.noise import (
    NoiseConfig,
    Relative,
    noisy_layers,
    perturbed_weights,
    remove_weight_noise_,
    weight_noise_,
)
from cimkit.robust.report import noise_sections
from cimkit.train import FinetuneConfig
from cimkit.utils import derive_seed, progress

__all__ = ["METHODS", "RobustTrainConfig", "RobustTrainStep", "WeightNoiseConfig", "WeightNoiseEval", "level_label"]

Method = Callable[[PipelineState, RunContext, "RobustTrainConfig", Step], None]
METHODS: Registry[Method] = Registry("robustness method")


def level_label(level: float) -> str:
    """``0.01`` -> ``1pct``, ``0.005`` -> ``0.5pct`` (metric-name friendly)."""
    return f"{100 * level:g}pct"


@dataclass
class RobustTrainConfig(FinetuneConfig):
    """A robustness method (``cimkit list robust-methods``) with a :class:`~cimkit.train.FinetuneConfig`
    recipe. ``noise_aware``: ``level`` relative weight noise (``relative``: ``channel`` / ``layer`` /
    ``weight``) in every training forward of the layers matching ``include`` / not ``skip``.
    ``options``: settings of a user-registered method."""

    method: str = "noise_aware"
    level: float = 0.01
    relative: Relative = Relative.CHANNEL
    include: list[str] = field(default_factory=lambda: ["*"])
    skip: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        METHODS.get(self.method)  # did-you-mean for unknown names
        self.relative = as_enum("relative", self.relative, Relative)
        check_range("level", self.level, 0.0, 10.0)

    def noise_config(self, seed: int) -> NoiseConfig:
        return NoiseConfig(level=self.level, relative=self.relative, include=list(self.include),
                           skip=list(self.skip), seed=seed)  # fmt: skip


@METHODS.register("noise_aware", "noise-aware training: relative Gaussian weight noise in every training forward, "
                  "gradients to the clean weights")  # fmt: skip
def noise_aware(state: PipelineState, ctx: RunContext, cfg: RobustTrainConfig, step: Step) -> None:
    state.model = weight_noise_(state.model, cfg.noise_config(derive_seed(ctx.seed, "noise-aware", step.variant)))
    n = len(noisy_layers(state.model))
    res = ctx.finetune(state.model, cfg, step_hooks=state.step_hooks, callbacks=state.callbacks,
                       tag=step.tag, key=step.cache_key)  # fmt: skip
    state.model = remove_weight_noise_(state.model)
    state.details.setdefault("finetune", []).append({"step": step.index, **res})
    state.seconds[f"step{step.index}-{step.op}"] = res["seconds"]
    state.add_metric("noise_aware_layers", float(n), "count")


@STEPS.register("robust_train", "train for robustness with a registered method (noise_aware: relative weight "
                "noise in training); FinetuneConfig recipe")  # fmt: skip
class RobustTrainStep(Step):
    op = "robust_train"
    config_cls = RobustTrainConfig
    tiny = {"epochs": 1}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: RobustTrainConfig = self.cfg  # type: ignore[assignment]
        METHODS.get(cfg.method)(state, ctx, cfg, self)


@dataclass
class WeightNoiseConfig(Config):
    """``repeats`` seeds x relative weight-noise ``levels`` (module docstring); headline at ``report_level``."""

    levels: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02])
    repeats: int = 5
    relative: Relative = Relative.CHANNEL
    report_level: float = 0.01

    def __post_init__(self) -> None:
        if not self.levels:
            raise ConfigError("levels: at least one noise level is needed (0 = clean)")
        for i, v in enumerate(self.levels):
            check_range(f"levels[{i}]", v, 0.0, 10.0)
        check_range("repeats", self.repeats, 1, 10_000)
        check_range("report_level", self.report_level, 0.0, 10.0)
        self.relative = as_enum("relative", self.relative, Relative)
        if self.repeats * len(self.levels) > 10_000:
            raise ConfigError(f"repeats x levels: {self.repeats * len(self.levels)} evaluations; allowed: <= 10000")


@EVALS.register("weight_noise", "relative Gaussian weight noise at several levels: mean ± std over seeds")
class WeightNoiseEval(EvalProtocol):
    name = "weight_noise"
    config_cls = WeightNoiseConfig
    tiny = {"levels": [0.0, 0.02], "repeats": 2}
    cfg: WeightNoiseConfig

    def evaluate(self, state: PipelineState, ctx: RunContext, variant: str) -> tuple[dict, dict, dict]:
        cfg = self.cfg
        model = state.model.eval()
        p = ctx.primary
        levels = [float(v) for v in cfg.levels]
        vals = torch.full((cfg.repeats, len(levels)), float("nan"), dtype=torch.float64)
        bar = progress(range(cfg.repeats), desc=f"{variant}: noise seeds", enabled=ctx.progress and cfg.repeats > 1)
        for r in bar:
            for j, lv in enumerate(levels):
                if lv == 0 and r > 0:
                    vals[r, j] = vals[0, j]
                    continue
                with perturbed_weights(model, lv, derive_seed(ctx.seed, "weight-noise", variant, r), cfg.relative) as m:
                    vals[r, j] = float(ctx.evaluate(m)[p])
        mean = vals.mean(0)
        std = vals.std(0, unbiased=True) if cfg.repeats > 1 else torch.zeros(len(levels), dtype=torch.float64)
        head = min(range(len(levels)), key=lambda j: abs(levels[j] - cfg.report_level))
        unit = ctx.task.units.get(p, "")
        metrics = {p: float(mean[head]), f"{p}_std": float(std[head])}
        units = {p: unit, f"{p}_std": unit}
        for j, lv in enumerate(levels):
            lab = level_label(lv)
            metrics[f"{p}_w{lab}"] = float(mean[j])
            metrics[f"{p}_w{lab}_std"] = float(std[j])
            units[f"{p}_w{lab}"] = units[f"{p}_w{lab}_std"] = unit
        details = {"levels": levels, "metric": p, "noise_mean": mean.tolist(), "noise_std": std.tolist(),
                   "per_repeat": vals.tolist(), "repeats": cfg.repeats, "relative": cfg.relative.value,
                   "report_level": levels[head], "fp32": ctx.fp32_metrics()[p]}  # fmt: skip
        return metrics, units, details

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return noise_sections(records)
