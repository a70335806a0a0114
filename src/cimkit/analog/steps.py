"""Pipeline step ``analog`` (map onto crossbars) and evaluation protocol ``chips_times``.

``chips_times``: for each of ``repeats`` chips (programming seeds) the model is programmed, then
drifted to every time in ``times`` (seconds after programming) and evaluated on the test set; the
metrics are the mean and std over chips of the task's primary metric at every time, and the
headline value is the one at the time closest to ``report_time``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cimkit.analog.calibration import calibrate
from cimkit.analog.config import AnalogConfig
from cimkit.analog.convert import convert_, drift, program
from cimkit.analog.hwa import clip_hook
from cimkit.analog.layers import analog_layers
from cimkit.analog.mapping import Compensation, RangeMode
from cimkit.analog.report import analog_sections
from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import DEFAULT_CALIB_BATCHES, RunContext
from cimkit.experiment.pipeline import EVALS, STEPS, EvalProtocol, PipelineState, Step
from cimkit.utils import derive_seed, progress

__all__ = ["AnalogStep", "AnalogStepConfig", "ChipsTimes", "ChipsTimesConfig", "time_label"]

log = logging.getLogger(__name__)

_UNITS = ((31536000.0, "y"), (86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))
MAX_TIME = 1e12  # s (about 31,700 years): later times are not physical for these drift fits
MAX_EVALUATIONS = 10_000  # repeats x times: a larger sweep is refused (it would run for hours)


def time_label(t: float) -> str:
    """``1s``, ``1h``, ``1d``, ``1y``, ``2.5h``... (the largest unit that gives a value >= 1)."""
    if not math.isfinite(t):
        raise ConfigError(f"times: {t!r} is not a finite number of seconds")
    for sec, unit in _UNITS:
        if t >= sec:
            v = t / sec
            return f"{v:g}{unit}" if abs(v - round(v)) > 1e-9 else f"{round(v)}{unit}"
    return f"{t:g}s"


@dataclass
class AnalogStepConfig(AnalogConfig):
    """:class:`~cimkit.analog.AnalogConfig` fields, plus ``calib_batches`` training batches that set
    calibrated (and the initial learned) DAC/ADC ranges. With ``hwa`` set, a later ``finetune``
    step trains hardware-aware (noise injection, weight clipping after every step)."""

    calib_batches: int = DEFAULT_CALIB_BATCHES

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("calib_batches", self.calib_batches, 1, 100_000)

    def analog_config(self) -> AnalogConfig:
        return AnalogConfig.from_dict({k: v for k, v in self.to_dict().items() if k != "calib_batches"})


def needs_calibration(model: nn.Module) -> bool:
    modes = {RangeMode.CALIBRATED, RangeMode.LEARNED}
    return any(m.mapping.dac_range_mode in modes or m.mapping.adc_range_mode in modes for _, m in analog_layers(model))


@STEPS.register("analog", "map Linear/Conv layers (quantized or not) onto crossbars (AnalogConfig fields)")
class AnalogStep(Step):
    op = "analog"
    config_cls = AnalogStepConfig
    tiny = {"calib_batches": 1}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: AnalogStepConfig = self.cfg  # type: ignore[assignment]
        state.model = convert_(state.model, cfg.analog_config())
        n = len(list(analog_layers(state.model)))
        if n == 0:
            raise ConfigError(f"variants.{self.variant}: no layer was mapped onto crossbars; check skip/overrides")
        if needs_calibration(state.model):
            calibrate(state.model, ctx.calib_batches(cfg.calib_batches), seed=ctx.seed)
            state.details["analog_calibrated"] = True
        if cfg.hwa is not None:
            state.step_hooks.append(clip_hook(cfg.hwa))
        state.add_metric("analog_layers", float(n), "count")
        state.eval_protocol = "chips_times"

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        return convert_(model, self.cfg.analog_config())  # type: ignore[attr-defined]


@dataclass
class ChipsTimesConfig(Config):
    """``repeats`` chips x ``times`` (s after programming); headline at ``report_time``.
    ``recalibrate``: re-set calibrated DAC/ADC ranges on every chip at t = 0 (as a real chip would
    be calibrated after programming). ``compensation``: drift compensation for the sweep (None:
    each layer's mapping)."""

    repeats: int = 10
    times: list[float] = field(default_factory=lambda: [1.0, 3600.0, 86400.0, 31536000.0])
    report_time: float = 86400.0
    recalibrate: bool = True
    compensation: Compensation | None = None

    def __post_init__(self) -> None:
        if not self.times:
            raise ConfigError("times: at least one time (seconds after programming) is needed")
        for i, t in enumerate(self.times):
            check_range(f"times[{i}]", t, 0.0, MAX_TIME)
        check_range("repeats", self.repeats, 1, MAX_EVALUATIONS)
        check_range("report_time", self.report_time, 0.0, MAX_TIME)
        if self.repeats * len(self.times) > MAX_EVALUATIONS:
            raise ConfigError(
                f"repeats x times: {self.repeats} x {len(self.times)} = {self.repeats * len(self.times)} "
                f"test-set evaluations is out of range; allowed: <= {MAX_EVALUATIONS}"
            )
        if self.compensation is not None:
            self.compensation = as_enum("compensation", self.compensation, Compensation)


@EVALS.register("chips_times", "program chips, drift to times after programming, evaluate: mean ± std over chips")
class ChipsTimes(EvalProtocol):
    name = "chips_times"
    config_cls = ChipsTimesConfig
    tiny = {"repeats": 2, "times": [1.0, 86400.0]}
    cfg: ChipsTimesConfig

    def evaluate(self, state: PipelineState, ctx: RunContext, variant: str) -> tuple[dict, dict, dict]:
        cfg = self.cfg
        model = state.model.eval()
        if not list(analog_layers(model)):
            raise ConfigError(f"variants.{variant}: eval protocol 'chips_times' needs analog layers (an analog step)")
        times = [float(t) for t in cfg.times]
        recal = cfg.recalibrate and any(
            RangeMode.CALIBRATED in (m.mapping.dac_range_mode, m.mapping.adc_range_mode) for _, m in analog_layers(model)
        )
        calib = ctx.calib_batches() if recal else []
        p = ctx.primary
        st = ctx.strategy
        bar = progress((), total=-(-cfg.repeats // st.world_size), desc=f"{variant}: chips",
                       enabled=ctx.progress and cfg.repeats > 1 and st.is_main)  # fmt: skip

        def chip(r: int) -> list[float]:  # one programmed chip over every time; its seeds depend on r only
            program(model, derive_seed(ctx.seed, "analog", variant, r))
            if recal:
                calibrate(model, calib, seed=r, modes=(RangeMode.CALIBRATED,))  # per chip, at t = 0
            out = []
            for t in times:
                drift(model, t, cfg.compensation)
                out.append(float(ctx.evaluate(model)[p]))
            bar.update()
            return out

        # the chips are split over the ranks of a distributed run and gathered in order
        vals = torch.tensor(st.map(chip, list(range(cfg.repeats))), dtype=torch.float64)  # (repeats, times)
        bar.close()
        mean = vals.mean(0)
        std = vals.std(0, unbiased=True) if cfg.repeats > 1 else torch.zeros(len(times), dtype=torch.float64)
        head = min(range(len(times)), key=lambda j: abs(math.log1p(times[j]) - math.log1p(cfg.report_time)))
        unit = ctx.task.units.get(p, "")
        metrics: dict[str, float] = {p: float(mean[head]), f"{p}_std": float(std[head])}
        units = {p: unit, f"{p}_std": unit}
        labels = [time_label(t) for t in times]
        for j, lab in enumerate(labels):
            metrics[f"{p}_{lab}"] = float(mean[j])
            metrics[f"{p}_{lab}_std"] = float(std[j])
            units[f"{p}_{lab}"] = units[f"{p}_{lab}_std"] = unit
        details = {
            "times": times, "labels": labels, "report_time": times[head], "metric": p, "mean": mean.tolist(),
            "std": std.tolist(), "per_repeat": vals.tolist(), "repeats": cfg.repeats,
            "compensation": None if cfg.compensation is None else cfg.compensation.value,
            "fp32": ctx.fp32_metrics()[p],
        }  # fmt: skip
        return metrics, units, details

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return analog_sections(records)
