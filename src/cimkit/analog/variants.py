"""The ``analog`` experiment variant kind: accuracy on simulated crossbars over time after programming.

For each of ``repeats`` chips (programming seeds) the converted model is programmed, then drifted to
every time in ``times`` and evaluated on the test set; metrics are the mean and std over chips.
Optionally the model is first fine-tuned hardware-aware (noise injection, weight clipping,
learned ranges, noise-aware distillation from the fp32 baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from cimkit.analog.calibration import calibrate
from cimkit.analog.config import ClipKind, HWAConfig, NoiseKind, resolve_device, resolve_mapping
from cimkit.analog.convert import analog_layers, convert, drift, program
from cimkit.analog.hwa import clip_hook, set_hwa
from cimkit.analog.mapping import Compensation, RangeMode
from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import RunContext
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult
from cimkit.utils import derive_seed

__all__ = ["AnalogVariant", "AnalogVariantConfig", "time_label"]

_UNITS = ((31536000.0, "y"), (86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))


def time_label(t: float) -> str:
    """``1s``, ``1h``, ``1d``, ``1y``, ``2.5h``... (the largest unit that gives a value >= 1)."""
    for sec, unit in _UNITS:
        if t >= sec:
            v = t / sec
            return f"{v:g}{unit}" if abs(v - round(v)) > 1e-9 else f"{round(v)}{unit}"
    return f"{t:g}s"


@dataclass
class AnalogVariantConfig(Config):
    """Analog evaluation (and optional hardware-aware fine-tuning) of the trained baseline.

    ``mapping``/``device`` are preset names (``cimkit.analog.MAPPINGS`` / ``DEVICES``) and
    ``*_overrides`` change some of their fields. ``times`` are seconds after programming;
    ``accuracy`` is the mean at the time closest to ``report_time``. ``hwa`` fine-tunes for
    ``hwa_epochs`` (0 = the experiment's epochs) at ``hwa_lr`` (0 = a quarter of the experiment's lr),
    distilling from the fp32 baseline with ``kd_alpha``/``kd_temperature``.
    """

    mapping: str = "standard"
    device: str = "pcm"
    mapping_overrides: dict[str, Any] = field(default_factory=dict)
    device_overrides: dict[str, Any] = field(default_factory=dict)
    compensation: Compensation = Compensation.GLOBAL
    times: list[float] = field(default_factory=lambda: [1.0, 3600.0, 86400.0, 31536000.0])
    repeats: int = 10
    report_time: float = 86400.0
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    keep_first: bool = False
    keep_last: bool = False
    calib_batches: int = 4
    hwa: bool = False
    hwa_noise: NoiseKind = NoiseKind.DEVICE
    hwa_noise_std: float = 0.05
    hwa_device_noise_scale: float = 1.0
    hwa_t_min: float = 3600.0
    hwa_t_max: float = 31536000.0
    hwa_epochs: int = 0
    hwa_lr: float = 0.0
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    clip: ClipKind = ClipKind.GAUSSIAN
    clip_sigma: float = 2.5

    def __post_init__(self) -> None:
        if not self.times:
            raise ConfigError("times: at least one time (seconds after programming) is needed")
        for i, t in enumerate(self.times):
            check_range(f"times[{i}]", t, 0.0)
        check_range("repeats", self.repeats, 1)
        check_range("report_time", self.report_time, 0.0)
        check_range("calib_batches", self.calib_batches, 1)
        check_range("hwa_epochs", self.hwa_epochs, 0)
        check_range("hwa_lr", self.hwa_lr, 0.0)
        check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_range("kd_temperature", self.kd_temperature, 0.0, lo_open=True)
        self.mapping_cfg()  # validate names and overrides now, before any training
        self.device_cfg()
        self.hwa_cfg()

    def mapping_cfg(self) -> Any:
        return resolve_mapping(self.mapping, **{**self.mapping_overrides, "compensation": self.compensation})

    def device_cfg(self) -> Any:
        return resolve_device(self.device, **self.device_overrides)

    def hwa_cfg(self, seed: int = 0) -> HWAConfig:
        return HWAConfig(
            noise=self.hwa_noise,
            noise_std=self.hwa_noise_std,
            device_noise_scale=self.hwa_device_noise_scale,
            t_min=self.hwa_t_min,
            t_max=self.hwa_t_max,
            clip=self.clip,
            clip_sigma=self.clip_sigma,
            seed=seed,
        )


@VARIANTS.register(
    "analog",
    "analog CIM simulation: accuracy at times after programming (mean ± std over chips), optional HWA training",
)
class AnalogVariant(Variant):
    config_cls = AnalogVariantConfig
    cfg: AnalogVariantConfig

    def run(self, ctx: RunContext) -> VariantResult:
        cfg = self.cfg
        mapping = cfg.mapping_cfg()
        amodel = convert(
            ctx.baseline_copy(),
            mapping,
            cfg.device_cfg(),
            include=cfg.include,
            exclude=cfg.exclude,
            keep_first=cfg.keep_first,
            keep_last=cfg.keep_last,
        )
        n_layers = len(list(analog_layers(amodel)))
        if n_layers == 0:
            raise ConfigError(f"variants.{self.name}: no layer was converted; check include/exclude")
        ranged = {mapping.dac_range_mode, mapping.adc_range_mode}
        calib = ctx.calib_batches(cfg.calib_batches) if ranged & {RangeMode.CALIBRATED, RangeMode.LEARNED} else []
        fit_summary: dict[str, Any] = {}
        if cfg.hwa:
            if calib:
                calibrate(amodel, calib)  # initial (learned) ranges before training
            base = ctx.train_cfg
            tcfg = base.replace(
                epochs=cfg.hwa_epochs or base.epochs,
                lr=cfg.hwa_lr or base.lr * 0.25,
                kd_alpha=cfg.kd_alpha,
                kd_temperature=cfg.kd_temperature,
                warmup_epochs=0.0,
            )
            hwa = cfg.hwa_cfg(seed=derive_seed(ctx.seed, "hwa", self.name))
            set_hwa(amodel, hwa)
            teacher = ctx.baseline_copy() if cfg.kd_alpha > 0 else None
            fit_summary = ctx.fit(
                amodel, tcfg, teacher=teacher, step_hooks=[clip_hook(hwa)], tag=f"analog-{self.name}", key=cfg.to_dict()
            )
            set_hwa(amodel, None)
        amodel.eval()
        times = [float(t) for t in cfg.times]
        acc = torch.zeros(cfg.repeats, len(times), dtype=torch.float64)
        for r in range(cfg.repeats):
            program(amodel, derive_seed(ctx.seed, "analog", self.name, r))
            if RangeMode.CALIBRATED in ranged:
                calibrate(amodel, calib, seed=r, modes=(RangeMode.CALIBRATED,))  # per chip, at t = 0
            for j, t in enumerate(times):
                drift(amodel, t)
                acc[r, j] = float(ctx.evaluate(amodel)["accuracy"])
        mean = acc.mean(0)
        std = acc.std(0, unbiased=True) if cfg.repeats > 1 else torch.zeros(len(times), dtype=torch.float64)
        head = min(range(len(times)), key=lambda j: abs(math.log1p(times[j]) - math.log1p(cfg.report_time)))
        fp32 = float(ctx.evaluate(ctx.baseline_copy())["accuracy"])
        metrics: dict[str, float] = {"accuracy": float(mean[head]), "accuracy_std": float(std[head])}
        units = {"accuracy": "fraction", "accuracy_std": "fraction"}
        labels = [time_label(t) for t in times]
        for j, lab in enumerate(labels):
            metrics[f"acc_{lab}"] = float(mean[j])
            metrics[f"acc_{lab}_std"] = float(std[j])
            units[f"acc_{lab}"] = units[f"acc_{lab}_std"] = "fraction"
        metrics["fp32_accuracy"] = fp32
        units["fp32_accuracy"] = "fraction"
        metrics["analog_layers"] = float(n_layers)
        units["analog_layers"] = "count"
        details = {
            "times": times,
            "labels": labels,
            "report_time": times[head],
            "mean": mean.tolist(),
            "std": std.tolist(),
            "per_repeat": acc.tolist(),
            "hwa": cfg.hwa,
            "compensation": cfg.compensation.value,
            "mapping": mapping.to_dict(),
            "device": cfg.device_cfg().to_dict(),
            "fp32_accuracy": fp32,
            "hwa_fit": {k: v for k, v in fit_summary.items() if k in ("seconds", "history")},
        }
        return VariantResult(metrics=metrics, units=units, details=details)

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        from cimkit.report import Section, table_html
        from cimkit.report.html import figure_html, have_matplotlib

        recs = [r for r in records if r.get("details", {}).get("times")]
        if not recs:
            return []
        rows = []
        for r in recs:
            d = r["details"]
            cells = [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(d["mean"], d["std"])]
            rows.append(
                [r["name"], r["config"].get("device", ""), "yes" if d["hwa"] else "no", d["compensation"], *cells]
            )
        all_labels = recs[0]["details"]["labels"]
        same = all(r["details"]["labels"] == all_labels for r in recs)
        headers = ["variant", "device", "HWA", "compensation"] + (
            [f"acc @ {lab} (%)" for lab in all_labels] if same else ["accuracy at times (%)"]
        )
        if not same:
            rows = [[*row[:4], ", ".join(row[4:])] for row in rows]
        html = table_html(headers, rows)
        if have_matplotlib():
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(6.0, 3.6))
            for r in recs:
                d = r["details"]
                ts = [max(t, 1e-1) for t in d["times"]]
                ax.errorbar(ts, [100 * m for m in d["mean"]], yerr=[100 * s for s in d["std"]], marker="o",
                            capsize=3, label=r["name"])  # fmt: skip
            fp32 = recs[0]["details"].get("fp32_accuracy")
            if fp32 is not None:
                ax.axhline(100 * fp32, color="k", ls="--", lw=1, label="fp32")
            ax.set_xscale("log")
            ax.set_xlabel("time after programming (s)")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            html = figure_html(fig, "analog accuracy vs time") + html
        return [Section("Analog CIM: accuracy vs time after programming", html)]
