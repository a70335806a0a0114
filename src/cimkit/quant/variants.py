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

import html
import time
from dataclasses import dataclass
from typing import Any

from torch import nn

from cimkit.config import check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import RunContext
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult
from cimkit.quant.accounting import account
from cimkit.quant.api import calibrate, convert_, quantize_
from cimkit.quant.bn_reestimate import reestimate_bn_
from cimkit.quant.config import QuantConfig
from cimkit.quant.fold import fold_bn_

UNITS = {
    "accuracy": "fraction", "loss": "nats", "fp32_accuracy": "fraction", "accuracy_drop": "points",
    "size_bytes": "bytes", "float_size_bytes": "bytes", "compression": "x", "params": "count",
    "macs": "MAC/sample", "bops": "bit-op/sample", "weight_bits": "bits", "avg_w_bits": "bits",
    "ptq_accuracy": "fraction", "qat_seconds": "s", "qat_step_ms": "ms",
}  # fmt: skip


@dataclass
class PTQConfig(QuantConfig):
    """Post-training quantization: ``calib_batches`` training batches (``calib_batch_size``, 0 =
    the experiment's train batch size) calibrate the activation ranges; ``fold_bn`` folds
    BatchNorm into the preceding layers first. ``bn_reestimate`` (needs ``fold_bn = false``)
    re-estimates the BatchNorm statistics of the quantized model on the same batches and then
    recalibrates the activation ranges (:func:`cimkit.quant.reestimate_bn_`)."""

    calib_batches: int = 8
    calib_batch_size: int = 0
    fold_bn: bool = True
    bn_reestimate: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("calib_batches", self.calib_batches, 1)
        check_range("calib_batch_size", self.calib_batch_size, 0)
        if self.bn_reestimate and self.fold_bn:
            raise ConfigError("bn_reestimate = true needs fold_bn = false (folded BatchNorm has no statistics left)")


@dataclass
class QATConfig(PTQConfig):
    """Quantization-aware training: PTQ as initialization, then ``epochs`` of fine-tuning with the
    experiment's ``[train]`` recipe at learning rate ``lr`` (0 = a tenth of ``train.lr``) and batch
    size ``batch_size`` (0 = ``train.batch_size``). ``kd_alpha`` > 0 distills from the fp32 model
    (Hinton et al. 2015) with ``train.kd_temperature``."""

    epochs: int = 3
    lr: float = 0.0
    batch_size: int = 0
    kd_alpha: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("epochs", self.epochs, 1)
        check_range("lr", self.lr, 0.0)
        check_range("batch_size", self.batch_size, 0)
        check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)


def _prepare(ctx: RunContext, cfg: PTQConfig) -> tuple[nn.Module, float]:
    """Baseline copy -> fold BN -> quantize -> calibrate; also returns the fp32 accuracy."""
    model = ctx.baseline_copy()
    fp32_acc = ctx.evaluate(model)["accuracy"]
    if cfg.fold_bn:
        fold_bn_(model)
    quantize_(model, cfg.quant_fields())
    batches = ctx.calib_batches(cfg.calib_batches, cfg.calib_batch_size or None)
    calibrate(model, batches, seed=ctx.seed)
    if cfg.bn_reestimate:
        reestimate_bn_(model, batches)
        calibrate(model, batches, seed=ctx.seed)  # activation ranges after the new BN statistics
    return model, fp32_acc


def _result(ctx: RunContext, model: nn.Module, cfg: PTQConfig, fp32_acc: float, **extra: Any) -> VariantResult:
    ev = ctx.evaluate(model)
    rep = account(model, ctx.data.x_test[:1].to(ctx.device))
    t = rep.total
    metrics: dict[str, Any] = {
        "accuracy": ev["accuracy"], "loss": ev["loss"], "fp32_accuracy": fp32_acc,
        "accuracy_drop": 100.0 * (fp32_acc - ev["accuracy"]), "size_bytes": t["size_bytes"],
        "float_size_bytes": t["float_size_bytes"], "compression": t["compression"], "params": t["params"],
        "macs": t["macs"], "bops": t["bops"], "weight_bits": t["weight_bits"], "avg_w_bits": t["avg_w_bits"],
    }  # fmt: skip
    details_extra = extra.pop("details", {})
    metrics.update(extra)
    details = {"label": cfg.label(), "layers": rep.layers, "total": rep.total, **details_extra}
    return VariantResult(metrics=metrics, units={k: UNITS[k] for k in metrics}, details=details)


@VARIANTS.register("ptq", "post-training quantization: fold BN, quantize (QuantConfig fields), calibrate, evaluate")
class PTQVariant(Variant):
    config_cls = PTQConfig

    def run(self, ctx: RunContext) -> VariantResult:
        cfg: PTQConfig = self.cfg  # type: ignore[assignment]
        model, fp32_acc = _prepare(ctx, cfg)
        return _result(ctx, model, cfg, fp32_acc)

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return quant_sections("Post-training quantization", records)


@VARIANTS.register("qat", "quantization-aware training: PTQ init, fine-tune with fake quantization, evaluate")
class QATVariant(Variant):
    config_cls = QATConfig

    def run(self, ctx: RunContext) -> VariantResult:
        cfg: QATConfig = self.cfg  # type: ignore[assignment]
        model, fp32_acc = _prepare(ctx, cfg)
        ptq_acc = ctx.evaluate(model)["accuracy"]
        base = ctx.train_cfg
        tcfg = base.replace(
            epochs=cfg.epochs,
            lr=cfg.lr or base.lr * 0.1,
            batch_size=cfg.batch_size or base.batch_size,
            kd_alpha=cfg.kd_alpha,
            warmup_epochs=0.0,
        )
        teacher = ctx.baseline_copy() if cfg.kd_alpha > 0 else None
        t0 = time.perf_counter()
        fit = ctx.fit(model, tcfg, teacher=teacher, tag=f"qat-{self.name}", key=cfg.to_dict())
        seconds = time.perf_counter() - t0
        convert_(model)
        hist = fit.get("history", [])
        steps = len(hist) * -(-ctx.data.x_train.shape[0] // tcfg.batch_size)
        step_ms = 1000.0 * sum(h.get("seconds", 0.0) for h in hist) / max(steps, 1)
        return _result(ctx, model, cfg, fp32_acc, ptq_accuracy=ptq_acc, qat_seconds=seconds, qat_step_ms=step_ms,
                       details={"history": hist, "train": tcfg.to_dict()})  # fmt: skip

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return quant_sections("Quantization-aware training", records)


# ----------------------------------------------------------------------------- report


def quant_sections(title: str, records: list[dict[str, Any]]) -> list[Any]:
    """A summary table, an accuracy-vs-size plot and per-layer tables for ``ptq``/``qat`` records."""
    from cimkit.report import Section, table_html
    from cimkit.report.html import have_matplotlib

    if not records:
        return []
    headers = ["variant", "bits", "accuracy", "Δ vs fp32 (pts)", "size (KiB)", "compression", "MMACs", "GBOPs"]
    rows = []
    for r in records:
        m = r["metrics"]
        rows.append([
            r["name"], r.get("details", {}).get("label", ""), f"{100 * m['accuracy']:.2f}%",
            f"{0.0 - m['accuracy_drop']:+.2f}", f"{m['size_bytes'] / 1024:.1f}", f"{m['compression']:.1f}x",
            f"{m['macs'] / 1e6:.3f}", f"{m['bops'] / 1e9:.3f}",
        ])  # fmt: skip
    body = table_html(headers, rows)
    if have_matplotlib():
        body += _size_plot(title, records)
    for r in records:
        layers = r.get("details", {}).get("layers") or []
        if not layers:
            continue
        lrows = [[x["name"], x["type"], x["w_bits"], x["a_bits"], f"{x['params']:,}", f"{x['macs']:,}",
                  f"{x['bops']:,}", f"{x['size_bytes']:.0f}"] for x in layers]  # fmt: skip
        t = r["details"].get("total", {})
        if t:
            lrows.append(["total", "", f"{t.get('avg_w_bits', 0):.2f} avg", "", f"{t.get('params', 0):,}",
                          f"{t.get('macs', 0):,}", f"{t.get('bops', 0):,}", f"{t.get('size_bytes', 0):.0f}"])  # fmt: skip
        tab = table_html(["layer", "type", "W bits", "A bits", "params", "MACs", "BOPs", "size (B)"], lrows)
        body += f"<details><summary>per-layer costs: {html.escape(r['name'])}</summary>{tab}</details>"
    return [Section(title, body)]


def _size_plot(title: str, records: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from cimkit.report import figure_html

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    m0 = records[0]["metrics"]
    ax.scatter([m0["float_size_bytes"] / 1024], [100 * m0["fp32_accuracy"]], marker="*", s=140, color="k",
               label="fp32")  # fmt: skip
    markers = "osD^vP<>X"
    for i, r in enumerate(records):
        m = r["metrics"]
        ax.scatter([m["size_bytes"] / 1024], [100 * m["accuracy"]], marker=markers[i % len(markers)], s=50,
                   label=r["name"])  # fmt: skip
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    accs = [100 * r["metrics"]["accuracy"] for r in records] + [100 * m0["fp32_accuracy"]]
    ax.set_ylim(max(0.0, min(accs) - 2.0), min(100.0, max(accs) + 1.0) + 0.3)
    ax.set_xlabel("model size (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title}: accuracy vs size")
    ax.grid(alpha=0.3)
    return figure_html(fig, "accuracy vs size")
