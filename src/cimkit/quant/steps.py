"""Pipeline steps of the quantization concern: ``fold_bn``, ``quantize``, ``freeze``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import DEFAULT_CALIB_BATCHES, RunContext
from cimkit.experiment.pipeline import STEPS, PipelineState, Step
from cimkit.quant.api import calibrate, freeze_, quantize_
from cimkit.quant.bn_reestimate import reestimate_bn_
from cimkit.quant.config import QuantConfig
from cimkit.quant.fold import fold_bn_

__all__ = ["FoldBNStep", "FreezeStep", "QuantizeStep", "QuantizeStepConfig", "quantize_fields"]


@dataclass
class QuantizeStepConfig(QuantConfig):
    """:class:`~cimkit.quant.QuantConfig` fields, plus calibration: ``calib_batches`` training batches
    (``calib_batch_size``, 0 = the experiment's train batch size) set the activation ranges;
    ``bn_reestimate`` re-estimates BatchNorm statistics of the quantized model on the same batches
    and recalibrates (:func:`cimkit.quant.reestimate_bn_`; needs BatchNorm not folded)."""

    calib_batches: int = DEFAULT_CALIB_BATCHES
    calib_batch_size: int = 0
    bn_reestimate: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("calib_batches", self.calib_batches, 1, 100_000)
        check_range("calib_batch_size", self.calib_batch_size, 0)


def quantize_fields(cfg: Config) -> QuantConfig:
    """The :class:`QuantConfig` part of a config that extends it."""
    names = {f.name for f in dataclasses.fields(QuantConfig)}
    return QuantConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k in names})


def quantize_and_calibrate(state: PipelineState, ctx: RunContext, cfg: QuantizeStepConfig) -> None:
    """``quantize_`` then ``calibrate`` (and optionally BatchNorm re-estimation) on ``state.model``."""
    state.model = quantize_(state.model, quantize_fields(cfg))
    batches = ctx.calib_batches(cfg.calib_batches, cfg.calib_batch_size or None)
    calibrate(state.model, batches, seed=ctx.seed)
    if cfg.bn_reestimate:
        reestimate_bn_(state.model, batches)
        calibrate(state.model, batches, seed=ctx.seed)  # activation ranges after the new BN statistics
    state.calib = batches


@STEPS.register("quantize", "fake-quantize weights and activations (QuantConfig fields), calibrate on training batches")
class QuantizeStep(Step):
    op = "quantize"
    config_cls = QuantizeStepConfig
    tiny = {"w_bits": 4, "calib_batches": 1}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        quantize_and_calibrate(state, ctx, self.cfg)  # type: ignore[arg-type]
        state.details["quant_label"] = self.cfg.label()  # type: ignore[attr-defined]

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        return quantize_(model, quantize_fields(self.cfg))


@dataclass
class NoOptions(Config):
    """No options."""


@STEPS.register("fold_bn", "fold BatchNorm into the preceding Linear/Conv layers (not undoable: weights change)")
class FoldBNStep(Step):
    op = "fold_bn"
    config_cls = NoOptions

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        fold_bn_(state.model)

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        return fold_bn_(model)


@STEPS.register("freeze", "freeze the weight quantizers' grids at their current values (after QAT)")
class FreezeStep(Step):
    op = "freeze"
    config_cls = NoOptions

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        if not any(hasattr(m, "w_quant") for m in state.model.modules()):
            raise ConfigError(f"steps[{self.index}]: freeze needs a quantized model (a quantize step before it)")
        freeze_(state.model)
