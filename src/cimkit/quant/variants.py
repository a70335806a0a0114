"""Experiment variant kinds ``ptq`` and ``qat`` (registered in :data:`cimkit.experiment.VARIANTS`).

A ``[[variants]]`` table takes every :class:`~cimkit.quant.QuantConfig` field plus the kind's own::

    [[variants]]
    kind = "ptq"            # fold BN, quantize, calibrate on calib_batches batches, evaluate
    name = "W8A8 PTQ"
    w_bits = 8
    a_bits = 8

    [[variants]]
    kind = "qat"            # ... then fine-tune with the experiment's [train] recipe (epochs/lr here)
    name = "W4A4 QAT"
    w_bits = 4
    a_bits = 4
    lsq = true
    epochs = 3
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from torch import nn

from cimkit.config import check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import RunContext
from cimkit.experiment.pipeline import PipelineState
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult
from cimkit.quant.accounting import account
from cimkit.quant.api import freeze_, quantize_
from cimkit.quant.fold import fold_bn_
from cimkit.quant.report import quant_sections
from cimkit.quant.steps import QuantizeStepConfig, quantize_and_calibrate, quantize_fields
from cimkit.train import FinetuneConfig

UNITS = {
    "accuracy": "fraction", "loss": "nats", "fp32_accuracy": "fraction", "accuracy_drop": "points",
    "size_bytes": "bytes", "float_size_bytes": "bytes", "compression": "x", "params": "count",
    "macs": "MAC/sample", "bops": "bit-op/sample", "weight_bits": "bits", "avg_w_bits": "bits",
    "ptq_accuracy": "fraction", "qat_seconds": "s", "qat_step_ms": "ms",
}  # fmt: skip


@dataclass
class PTQConfig(QuantizeStepConfig):
    """Post-training quantization, the short form of the pipeline ``fold_bn`` -> ``quantize``:
    ``calib_batches`` training batches (``calib_batch_size``, 0 = the experiment's train batch
    size) calibrate the activation ranges; ``fold_bn`` folds BatchNorm into the preceding layers
    first. ``bn_reestimate`` (needs ``fold_bn = false``) re-estimates the BatchNorm statistics of
    the quantized model on the same batches and then recalibrates the activation ranges
    (:func:`cimkit.quant.reestimate_bn_`)."""

    fold_bn: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bn_reestimate and self.fold_bn:
            raise ConfigError("bn_reestimate = true needs fold_bn = false (folded BatchNorm has no statistics left)")


@dataclass
class QATConfig(PTQConfig):
    """Quantization-aware training, the short form of ``fold_bn`` -> ``quantize`` -> ``finetune``
    -> ``freeze``: ``epochs`` of fine-tuning with the experiment's ``[train]`` recipe at learning
    rate ``lr`` (0 = a tenth of ``train.lr``) and batch size ``batch_size`` (0 = ``train.batch_size``).
    ``kd_alpha`` > 0 distills from the fp32 model (Hinton et al. 2015) with ``train.kd_temperature``."""

    epochs: int = 3
    lr: float = 0.0
    batch_size: int = 0
    kd_alpha: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("epochs", self.epochs, 1, 100_000)
        check_range("lr", self.lr, 0.0)
        check_range("batch_size", self.batch_size, 0)
        check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)

    def finetune(self, kd_temperature: float) -> FinetuneConfig:
        return FinetuneConfig(epochs=self.epochs, lr=self.lr, lr_scale=0.1, batch_size=self.batch_size,
                              kd_alpha=self.kd_alpha, kd_temperature=kd_temperature)  # fmt: skip


def _prepare(ctx: RunContext, cfg: PTQConfig) -> tuple[nn.Module, float]:
    """Baseline copy -> fold BN -> quantize -> calibrate; also returns the fp32 primary metric."""
    state = PipelineState(model=ctx.baseline_copy())
    if cfg.fold_bn:
        fold_bn_(state.model)
    quantize_and_calibrate(state, ctx, cfg)
    return state.model, ctx.fp32_metrics()[ctx.primary]


def _result(ctx: RunContext, model: nn.Module, cfg: PTQConfig, fp32: float, **extra: Any) -> VariantResult:
    ev = ctx.evaluate(model)
    rep = account(model, ctx.example_input())
    t = rep.total
    p = ctx.primary
    metrics: dict[str, Any] = {k: v for k, v in ev.items() if k != "n"}
    units = {k: ctx.task.units.get(k, "") for k in metrics}
    metrics[f"fp32_{p}"] = fp32
    units[f"fp32_{p}"] = ctx.task.units.get(p, "")
    if p == "accuracy":
        metrics["accuracy_drop"] = 100.0 * (fp32 - ev["accuracy"])
        units["accuracy_drop"] = "points"
    for k in ("size_bytes", "float_size_bytes", "compression", "params", "macs", "bops", "weight_bits", "avg_w_bits"):
        metrics[k] = t[k]
        units[k] = UNITS[k]
    details_extra = extra.pop("details", {})
    for k, v in extra.items():
        metrics[k] = v
        units[k] = UNITS.get(k, ctx.task.units.get(k.removeprefix("ptq_"), ""))
    details = {"label": cfg.label(), "layers": rep.layers, "total": rep.total, **details_extra}
    return VariantResult(metrics=metrics, units=units, details=details, model=model)


def _check(cfg: PTQConfig, model: nn.Module) -> None:
    if cfg.fold_bn:
        fold_bn_(model)
    quantize_(model, quantize_fields(cfg))


@VARIANTS.register("ptq", "post-training quantization: fold BN, quantize (QuantConfig fields), calibrate, evaluate")
class PTQVariant(Variant):
    config_cls = PTQConfig
    tiny = {"calib_batches": 1}

    def run(self, ctx: RunContext) -> VariantResult:
        cfg: PTQConfig = self.cfg  # type: ignore[assignment]
        model, fp32 = _prepare(ctx, cfg)
        return _result(ctx, model, cfg, fp32)

    def check(self, model: nn.Module, example: Any) -> None:
        _check(self.cfg, copy.deepcopy(model))  # type: ignore[arg-type]

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return quant_sections("Post-training quantization", records)


@VARIANTS.register("qat", "quantization-aware training: PTQ init, fine-tune with fake quantization, evaluate")
class QATVariant(Variant):
    config_cls = QATConfig
    tiny = {"epochs": 1, "calib_batches": 1}

    def run(self, ctx: RunContext) -> VariantResult:
        cfg: QATConfig = self.cfg  # type: ignore[assignment]
        model, fp32 = _prepare(ctx, cfg)
        p = ctx.primary
        ptq = ctx.evaluate(model)[p]
        t0 = time.perf_counter()
        fit = ctx.finetune(model, cfg.finetune(ctx.train_cfg.kd_temperature), tag=f"qat-{self.name}",
                           key=cfg.to_dict())  # fmt: skip
        seconds = time.perf_counter() - t0
        freeze_(model)
        hist = fit.get("history", [])
        bs = fit["train"]["batch_size"]
        steps = len(hist) * -(-ctx.data.x_train.shape[0] // bs)
        step_ms = 1000.0 * sum(h.get("seconds", 0.0) for h in hist) / max(steps, 1)
        extra = {f"ptq_{p}": ptq, "qat_seconds": seconds, "qat_step_ms": step_ms}
        return _result(ctx, model, cfg, fp32, **extra, details={"history": hist, "train": fit["train"]})

    def check(self, model: nn.Module, example: Any) -> None:
        _check(self.cfg, copy.deepcopy(model))  # type: ignore[arg-type]

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return quant_sections("Quantization-aware training", records)


