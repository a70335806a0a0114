"""Pipeline steps of the spiking concern and the ``time_steps`` evaluation protocol.

* ``qcfs``: replace every ReLU by a QCFS activation with ``levels`` (Bu et al., ICLR 2022); a
  ``finetune`` step after it trains the ANN with it;
* ``to_snn``: ANN→SNN conversion (:class:`~cimkit.snn.ConvertConfig` fields, plus
  ``calib_batches`` for threshold balancing); records the incoming network's ``ann_<primary>``,
  the thresholds and the activity
  (:class:`~cimkit.snn.SpikeStats`) on the calibration batches, and asks for ``time_steps``;
* ``snn_analog``: the ``analog`` step (all its fields) for a spiking network: layers driven by
  spikes get single-pulse inputs, no DAC (:mod:`cimkit.snn.cim`); asks for ``chips_times``.

A ``finetune`` step after ``to_snn`` trains the SNN by backpropagation through time (surrogate
gradients); after ``snn_analog`` with ``hwa`` set, hardware-aware.

``time_steps`` evaluates the spiking network at every ``steps`` value of ``T`` (default 1, 2, 4,
8, 16, 32); metrics ``<primary>_T<T>`` for each, ``<primary>`` at ``report_steps`` (0: the
network's own ``T``, if listed, else the largest), and the activity at that ``T``: ``spikes``,
``synops`` (per inference) and the full :class:`~cimkit.snn.SpikeStats` in the details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cimkit.analog.config import AnalogConfig
from cimkit.analog.convert import convert_
from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import DEFAULT_CALIB_BATCHES, RunContext
from cimkit.experiment.pipeline import EVALS, STEPS, EvalProtocol, PipelineState, Step
from cimkit.snn.activity import ActivityMonitor, measure_activity
from cimkit.snn.cim import spike_input_levels, spiking_analog_config
from cimkit.snn.convert import ConvertConfig, qcfs_, to_snn
from cimkit.snn.encoders import Encoder, RateEncoder
from cimkit.snn.report import time_steps_sections
from cimkit.snn.simulate import SpikingNet

__all__ = ["QCFSStep", "QCFSStepConfig", "SpikingAnalogStep", "TimeSteps", "TimeStepsConfig", "ToSNNStep",
           "ToSNNStepConfig"]  # fmt: skip


@dataclass
class QCFSStepConfig(Config):
    """``levels`` L of the QCFS activations; ``λ`` starts at the ``percentile`` of each ReLU's
    positive outputs on ``calib_batches`` training batches (``calib_batches = 0``: at
    ``init_threshold``); ``avg_pool`` replaces max pooling by average pooling."""

    levels: int = 8
    calib_batches: int = DEFAULT_CALIB_BATCHES
    percentile: float = 99.9
    init_threshold: float = 8.0
    avg_pool: bool = False

    def __post_init__(self) -> None:
        check_range("levels", self.levels, 1, 1 << 16)
        check_range("calib_batches", self.calib_batches, 0, 100_000)
        check_range("percentile", self.percentile, 0.0, 100.0, lo_open=True)
        check_range("init_threshold", self.init_threshold, 0.0, lo_open=True)


@STEPS.register("qcfs", "replace ReLU by QCFS activations with L levels (Bu et al. 2022); fine-tune after it")
class QCFSStep(Step):
    op = "qcfs"
    config_cls = QCFSStepConfig
    tiny = {"levels": 4, "calib_batches": 1}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: QCFSStepConfig = self.cfg  # type: ignore[assignment]
        batches = ctx.calib_batches(cfg.calib_batches) if cfg.calib_batches else None
        state.model = qcfs_(state.model, cfg.levels, batches, percentile=cfg.percentile,
                            init_threshold=cfg.init_threshold, avg_pool=cfg.avg_pool, seed=ctx.seed)  # fmt: skip

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        cfg: QCFSStepConfig = self.cfg  # type: ignore[assignment]
        return qcfs_(model, cfg.levels, [example], avg_pool=cfg.avg_pool)


@dataclass
class ToSNNStepConfig(ConvertConfig):
    """:class:`~cimkit.snn.ConvertConfig` fields plus ``calib_batches`` training batches for
    threshold balancing (and the recorded activity); ``ann_metric``: also evaluate the network as
    it enters the conversion (metric ``ann_<primary>``)."""

    calib_batches: int = DEFAULT_CALIB_BATCHES
    ann_metric: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("calib_batches", self.calib_batches, 1, 100_000)

    def convert_config(self) -> ConvertConfig:
        return ConvertConfig.from_dict({k: v for k, v in self.to_dict().items() if k not in ("calib_batches", "ann_metric")})


def _encoder(cfg: ConvertConfig, ctx: RunContext | None) -> Encoder | None:
    if cfg.encoder != "rate":
        return None
    data = ctx.data if ctx is not None else None
    mean, std = getattr(data, "mean", None), getattr(data, "std", None)
    if mean is None or std is None:
        return RateEncoder(rescale=True, seed=ctx.seed if ctx is not None else 0)
    return RateEncoder(gain=tuple(std), offset=tuple(mean), rescale=True, seed=ctx.seed if ctx is not None else 0)


@STEPS.register("to_snn", "ANN→SNN: IF neurons, threshold balancing or QCFS thresholds, θ/2 start (ConvertConfig)")
class ToSNNStep(Step):
    op = "to_snn"
    config_cls = ToSNNStepConfig
    tiny = {"num_steps": 4, "calib_batches": 1}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: ToSNNStepConfig = self.cfg  # type: ignore[assignment]
        batches = ctx.calib_batches(cfg.calib_batches)
        p = ctx.primary
        if cfg.ann_metric:  # the network as it enters the conversion (e.g. the fine-tuned QCFS ANN)
            state.add_metric(f"ann_{p}", float(ctx.evaluate(state.model)[p]), ctx.task.units.get(p, ""))
        snn = to_snn(state.model, batches, cfg.convert_config(), encoder=_encoder(cfg, ctx), seed=ctx.seed)
        state.model = snn
        stats = measure_activity(snn, batches[:2])
        conv = dict(snn.conversion)
        state.details["snn"] = {**conv, **snn.describe(), "activity": stats.to_dict()}
        state.add_metric("time_steps", float(snn.num_steps), "steps")
        state.eval_protocol = "time_steps"

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        cfg: ToSNNStepConfig = self.cfg  # type: ignore[assignment]
        return to_snn(model, [example], cfg.convert_config(), encoder=_encoder(cfg, None))


@dataclass
class SpikingAnalogStepConfig(AnalogConfig):
    """The ``analog`` step's fields (:class:`~cimkit.analog.AnalogConfig` and ``calib_batches``);
    spike-driven layers (measured on the calibration batches) take single-pulse inputs."""

    calib_batches: int = DEFAULT_CALIB_BATCHES

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("calib_batches", self.calib_batches, 1, 100_000)

    def analog_config(self) -> AnalogConfig:
        return AnalogConfig.from_dict({k: v for k, v in self.to_dict().items() if k != "calib_batches"})


@STEPS.register("snn_analog", "map a spiking network onto crossbars: spike-driven layers get 1-bit pulses (no DAC)")
class SpikingAnalogStep(Step):
    op = "snn_analog"
    config_cls = SpikingAnalogStepConfig
    tiny = {"calib_batches": 1}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: SpikingAnalogStepConfig = self.cfg  # type: ignore[assignment]
        levels = spike_input_levels(state.model, ctx.calib_batches(cfg.calib_batches))
        spiking = spiking_analog_config(cfg, levels)
        analog = STEPS.get("analog")  # the analog concern's step (looked up, not imported: no import-order ties)
        inner = analog(analog.config_cls.from_dict(spiking.to_dict()), self.index, self.variant, self.prefix)
        inner.run(state, ctx)
        state.details["snn_analog"] = {"spike_layers": levels}
        state.add_metric("spike_driven_layers", float(len(levels)), "count")

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        levels = spike_input_levels(model, [example])
        return convert_(model, spiking_analog_config(self.cfg, levels).analog_config())  # type: ignore[arg-type, attr-defined]


@dataclass
class TimeStepsConfig(Config):
    """``steps``: the values of T to evaluate; ``report_steps``: the T of the headline metric
    (0: the network's own, if listed, else the largest); ``activity``: measure spikes and
    synaptic operations at every T."""

    steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    report_steps: int = 0
    activity: bool = True

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError("steps: at least one number of time steps is needed")
        for i, t in enumerate(self.steps):
            check_range(f"steps[{i}]", t, 1, 100_000)
        check_range("report_steps", self.report_steps, 0, 100_000)
        if self.report_steps and self.report_steps not in self.steps:
            raise ConfigError(f"report_steps: {self.report_steps} is not in steps {self.steps}")


@EVALS.register("time_steps", "a spiking network at T = 1, 2, 4, ... steps: the primary metric and activity vs T")
class TimeSteps(EvalProtocol):
    name = "time_steps"
    config_cls = TimeStepsConfig
    tiny = {"steps": [1, 2]}
    tiny_steps = [{"op": "to_snn", **ToSNNStep.tiny}]  # what a model needs before this protocol
    cfg: TimeStepsConfig

    def evaluate(self, state: PipelineState, ctx: RunContext, variant: str) -> tuple[dict, dict, dict]:
        model = state.model
        if not isinstance(model, SpikingNet):
            raise ConfigError(f"variants.{variant}: eval protocol 'time_steps' needs a spiking network "
                              f"(a to_snn step before it)")  # fmt: skip
        own = model.num_steps
        steps = [int(t) for t in self.cfg.steps]
        head = self.cfg.report_steps or (own if own in steps else max(steps))
        p = ctx.primary
        unit = ctx.task.units.get(p, "")
        metrics: dict[str, float] = {}
        units: dict[str, str] = {}
        values, spikes, synops, stats_head = [], [], [], None
        try:
            for t in steps:
                model.num_steps = t
                model.encoder.reseed(ctx.seed)
                if self.cfg.activity:
                    with ActivityMonitor(model) as mon:
                        v = float(ctx.evaluate(model)[p])
                    st = mon.stats()
                    spikes.append(st.spikes)
                    synops.append(st.synops)
                    if t == head:
                        stats_head = st
                else:
                    v = float(ctx.evaluate(model)[p])
                values.append(v)
                metrics[f"{p}_T{t}"] = v
                units[f"{p}_T{t}"] = unit
        finally:
            model.num_steps = own
        metrics[p], units[p] = values[steps.index(head)], unit
        metrics["time_steps"], units["time_steps"] = float(head), "steps"
        if stats_head is not None:
            metrics["spikes"], units["spikes"] = stats_head.spikes, "count"
            metrics["synops"], units["synops"] = stats_head.synops, "count"
        details = {"time_steps": steps, "values": values, "metric": p, "report_steps": head,
                   "fp32": ctx.fp32_metrics()[p], "spikes_vs_T": spikes, "synops_vs_T": synops,
                   "activity": stats_head.to_dict() if stats_head is not None else None}  # fmt: skip
        return metrics, units, details

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return time_steps_sections(records)
