"""The ``analog`` experiment variant kind, the short form of the pipeline
``analog`` -> [``finetune`` (hardware-aware)] with the ``chips_times`` evaluation.

For each of ``repeats`` chips (programming seeds) the converted model is programmed, then drifted to
every time in ``times`` and evaluated on the test set; metrics are the mean and std over chips of the
task's primary metric. Optionally the model is first fine-tuned hardware-aware (noise injection,
weight clipping, learned ranges, noise-aware distillation from the fp32 baseline).
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cimkit.analog.calibration import calibrate
from cimkit.analog.config import AnalogConfig, ClipKind, HWAConfig, NoiseKind
from cimkit.analog.convert import convert_
from cimkit.analog.hwa import clip_hook
from cimkit.analog.layers import analog_layers
from cimkit.analog.mapping import Compensation
from cimkit.analog.report import analog_sections
from cimkit.analog.steps import ChipsTimes, ChipsTimesConfig, needs_calibration, time_label
from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import DEFAULT_CALIB_BATCHES, RunContext
from cimkit.experiment.pipeline import PipelineState
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult
from cimkit.nn.walk import FIRST, LAST
from cimkit.train import FinetuneConfig
from cimkit.utils import derive_seed

__all__ = ["AnalogVariant", "AnalogVariantConfig", "time_label"]


@dataclass
class AnalogVariantConfig(Config):
    """Analog evaluation (and optional hardware-aware fine-tuning) of the trained baseline.

    ``mapping``/``device`` are preset names (``cimkit.analog.MAPPINGS`` / ``DEVICES``) and
    ``*_overrides`` change some of their fields; ``layer_overrides`` are per-layer mapping rules
    (see :class:`~cimkit.analog.AnalogConfig`). ``times`` are seconds after programming; the
    headline metric is the mean at the time closest to ``report_time``. ``hwa`` fine-tunes for
    ``hwa_epochs`` (0 = the experiment's epochs) at ``hwa_lr`` (0 = a quarter of the experiment's
    lr), distilling from the fp32 baseline with ``kd_alpha``/``kd_temperature``.
    """

    mapping: str = "standard"
    device: str = "pcm"
    mapping_overrides: dict[str, Any] = field(default_factory=dict)
    device_overrides: dict[str, Any] = field(default_factory=dict)
    layer_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    compensation: Compensation = Compensation.GLOBAL
    times: list[float] = field(default_factory=lambda: [1.0, 3600.0, 86400.0, 31536000.0])
    repeats: int = 10
    report_time: float = 86400.0
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    keep_first: bool = False
    keep_last: bool = False
    calib_batches: int = DEFAULT_CALIB_BATCHES
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
        check_range("calib_batches", self.calib_batches, 1, 100_000)
        check_range("hwa_epochs", self.hwa_epochs, 0, 100_000)
        check_range("hwa_lr", self.hwa_lr, 0.0)
        check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_range("kd_temperature", self.kd_temperature, 0.0, lo_open=True)
        self.sweep()  # validate times/repeats, names and overrides now, before any training
        self.analog_config()
        self.hwa_cfg()

    def analog_config(self, hwa_seed: int = 0) -> AnalogConfig:
        skip = list(self.exclude) + ([FIRST] if self.keep_first else []) + ([LAST] if self.keep_last else [])
        return AnalogConfig(mapping=self.mapping, device=self.device,
                            mapping_overrides={**self.mapping_overrides, "compensation": self.compensation},
                            device_overrides=self.device_overrides, overrides=self.layer_overrides, skip=skip,
                            hwa=self.hwa_cfg(hwa_seed) if self.hwa else None)  # fmt: skip

    def hwa_cfg(self, seed: int = 0) -> HWAConfig:
        return HWAConfig(noise=self.hwa_noise, noise_std=self.hwa_noise_std,
                         device_noise_scale=self.hwa_device_noise_scale, t_min=self.hwa_t_min, t_max=self.hwa_t_max,
                         clip=self.clip, clip_sigma=self.clip_sigma, seed=seed)  # fmt: skip

    def finetune_cfg(self, base_epochs: int) -> FinetuneConfig:
        return FinetuneConfig(epochs=self.hwa_epochs or base_epochs, lr=self.hwa_lr, lr_scale=0.25,
                              kd_alpha=self.kd_alpha, kd_temperature=self.kd_temperature)  # fmt: skip

    def sweep(self) -> ChipsTimesConfig:
        return ChipsTimesConfig(repeats=self.repeats, times=list(self.times), report_time=self.report_time)

    def filter_fn(self) -> Any:
        inc = list(self.include)
        return lambda name, mod: any(fnmatch.fnmatchcase(name, p) for p in inc)


@VARIANTS.register(
    "analog",
    "analog CIM simulation: accuracy at times after programming (mean ± std over chips), optional HWA training",
)
class AnalogVariant(Variant):
    config_cls = AnalogVariantConfig
    cfg: AnalogVariantConfig
    tiny = {"repeats": 2, "times": [1.0, 86400.0], "hwa": True, "hwa_epochs": 1, "calib_batches": 1}

    def run(self, ctx: RunContext) -> VariantResult:
        cfg = self.cfg
        acfg = cfg.analog_config(hwa_seed=derive_seed(ctx.seed, "hwa", self.name))
        state = PipelineState(model=convert_(ctx.baseline_copy(), acfg, cfg.filter_fn()))
        n_layers = len(list(analog_layers(state.model)))
        if n_layers == 0:
            raise ConfigError(f"variants.{self.name}: no layer was converted; check include/exclude")
        calib = ctx.calib_batches(cfg.calib_batches) if needs_calibration(state.model) else []
        fit_summary: dict[str, Any] = {}
        if cfg.hwa:
            if calib:
                calibrate(state.model, calib)  # initial (learned) ranges before training
            fit_summary = ctx.finetune(state.model, cfg.finetune_cfg(ctx.train_cfg.epochs),
                                       step_hooks=[clip_hook(acfg.hwa)], tag=f"analog-{self.name}",
                                       key=cfg.to_dict())  # type: ignore[arg-type]  # fmt: skip
        metrics, units, details = ChipsTimes(cfg.sweep()).evaluate(state, ctx, self.name)
        p = ctx.primary
        metrics[f"fp32_{p}"] = details["fp32"]
        units[f"fp32_{p}"] = ctx.task.units.get(p, "")
        metrics["analog_layers"] = float(n_layers)
        units["analog_layers"] = "count"
        details.update({
            "hwa": cfg.hwa, "compensation": cfg.compensation.value, "device": cfg.device,
            "mapping": acfg.base_mapping().to_dict(), "device_config": acfg.base_device().to_dict(),
            "hwa_fit": {k: v for k, v in fit_summary.items() if k in ("seconds", "history")},
        })  # fmt: skip
        return VariantResult(metrics=metrics, units=units, details=details, model=state.model)

    def check(self, model: nn.Module, example: Any) -> None:
        convert_(copy.deepcopy(model), self.cfg.analog_config(), self.cfg.filter_fn())

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return analog_sections(records)
