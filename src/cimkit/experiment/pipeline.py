"""Pipeline experiments: a variant is a list of transform steps plus an evaluation protocol.

::

    [[variants]]
    kind = "pipeline"
    name = "binary W4A on RRAM"
    steps = [
      { op = "quantize", w_mode = "binary", a_bits = 4 },
      { op = "finetune", epochs = 3, lr_scale = 0.1 },
      { op = "analog", device = "rram_saf" },
    ]
    eval = { protocol = "chips_times", repeats = 5, times = [1, 3600, 86400] }

Each ``op`` is a registered :class:`Step` (``cimkit list steps``) whose config is that table's
other keys; each ``protocol`` a registered :class:`EvalProtocol` (``cimkit list evals``).
The steps run in order on a copy of the trained baseline; ``eval`` defaults to ``auto``: the
protocol the last step that asked for one set (the ``analog`` step asks for ``chips_times``),
else ``plain`` (the test set, once). Concerns register their steps and protocols when their
plugin module is imported (:mod:`cimkit.plugins`); nothing here names them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from cimkit.config import Config
from cimkit.errors import ConfigError
from cimkit.experiment.context import RunContext
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult
from cimkit.plugins import load_plugins
from cimkit.registry import Registry
from cimkit.train import FinetuneConfig

__all__ = [
    "EVALS", "STEPS", "EvalProtocol", "FinetuneStep", "PipelineConfig", "PipelineState", "PipelineVariant",
    "PlainEval", "Step", "parse_steps", "run_pipeline",
]  # fmt: skip


@dataclass
class PipelineState:
    """What flows through a pipeline: the model being transformed, and what the steps leave for the
    ones after them (training hooks, metrics, details, the evaluation protocol they ask for)."""

    model: nn.Module
    step_hooks: list[Any] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    eval_protocol: str = "plain"
    calib: list[Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def add_metric(self, name: str, value: float, unit: str) -> None:
        self.metrics[name] = value
        self.units[name] = unit


class Step:
    """A pipeline step: ``op`` names it, ``config_cls`` is its config; ``run`` transforms
    ``state.model`` in place (or replaces it). ``dry_run`` applies the structural part to an
    untrained model copy so the runner can reject impossible settings before any training."""

    op: ClassVar[str] = ""
    config_cls: ClassVar[type[Config]] = Config
    tiny: ClassVar[dict[str, Any]] = {}  # settings of a seconds-long smoke run (contract tests)
    tasks: ClassVar[tuple[str, ...]] = ()  # the tasks the step works for (empty: every task)

    def __init__(self, cfg: Config, index: int = 0, variant: str = "", prefix: list[dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.index = index
        self.variant = variant
        self.prefix = list(prefix or [])  # the step tables before this one

    @property
    def tag(self) -> str:
        """A cache tag for this step (``pipeline-<op>``); with :attr:`cache_key` it names the step's
        checkpoints, so pipelines that share their first steps share their trained models."""
        return f"pipeline-{self.op}"

    @property
    def cache_key(self) -> dict[str, Any]:
        """What this step's result depends on: the step tables before it and its own config."""
        return {"prefix": self.prefix, "step": {"op": self.op, **self.cfg.to_dict()}}

    def run(self, state: PipelineState, ctx: RunContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        return model

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        """Report sections for the results.json records of pipelines that ran this step; none by default."""
        return []


STEPS: Registry[type[Step]] = Registry("pipeline step", loader=load_plugins)


class EvalProtocol:
    """How a pipeline's final model is scored; ``evaluate`` returns ``(metrics, units, details)``."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[Config]] = Config
    tiny: ClassVar[dict[str, Any]] = {}  # settings of a seconds-long smoke run (contract tests)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def evaluate(self, state: PipelineState, ctx: RunContext, variant: str) -> tuple[dict, dict, dict]:
        raise NotImplementedError  # pragma: no cover - abstract

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        """Report sections for the results.json records evaluated with this protocol; none by default."""
        return []


EVALS: Registry[type[EvalProtocol]] = Registry("evaluation protocol", loader=load_plugins)


@dataclass
class PlainEvalConfig(Config):
    """The test set, once."""


@EVALS.register("plain", "the test set, once: the task's metrics")
class PlainEval(EvalProtocol):
    name = "plain"
    config_cls = PlainEvalConfig

    def evaluate(self, state: PipelineState, ctx: RunContext, variant: str) -> tuple[dict, dict, dict]:
        ev = ctx.evaluate(state.model)
        metrics = {k: v for k, v in ev.items() if k != "n"}
        return metrics, {k: ctx.task.units.get(k, "") for k in metrics}, {}


@dataclass
class FinetuneStepConfig(FinetuneConfig):
    """:class:`~cimkit.train.FinetuneConfig`: fine-tune the model as it is now (QAT on a quantized
    model, hardware-aware training on an analog one: the earlier steps' hooks, e.g. weight
    clipping, run after every optimizer step)."""


@STEPS.register("finetune", "fine-tune the current model (epochs, lr or lr_scale, kd_alpha: FinetuneConfig)")
class FinetuneStep(Step):
    op = "finetune"
    config_cls = FinetuneStepConfig
    tiny = {"epochs": 1}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: FinetuneStepConfig = self.cfg  # type: ignore[assignment]
        if cfg.epochs == 0:
            return
        res = ctx.finetune(state.model, cfg, step_hooks=state.step_hooks, callbacks=state.callbacks,
                           tag=self.tag, key=self.cache_key)  # fmt: skip
        state.details.setdefault("finetune", []).append({"step": self.index, **res})
        state.seconds[f"step{self.index}-{self.op}"] = res["seconds"]


def parse_steps(steps: list[dict[str, Any]], where: str = "steps", variant: str = "") -> list[Step]:
    """Validated :class:`Step` objects from ``[{op = ..., ...}, ...]``."""
    if not isinstance(steps, list):
        raise ConfigError(f"{where}: expected a list of step tables, got {steps!r}")
    out = []
    for i, raw in enumerate(steps):
        w = f"{where}[{i}]."
        if not isinstance(raw, dict) or "op" not in raw:
            raise ConfigError(f"{w}op: missing; each step needs op = \"...\" (see `cimkit list steps`)")
        rest = dict(raw)
        op = rest.pop("op")
        try:
            cls = STEPS.get(op)
        except ConfigError as e:
            raise ConfigError(f"{w}op: {e}") from None
        out.append(cls(cls.config_cls.from_dict(rest, where=w), i, variant, prefix=steps[:i]))
    return out


def parse_eval(raw: dict[str, Any] | str | None, where: str = "eval") -> EvalProtocol | None:
    """An :class:`EvalProtocol` from ``{protocol = ..., ...}`` (or a bare name); None for ``auto``."""
    if raw is None or raw == "auto":
        return None
    table = {"protocol": raw} if isinstance(raw, str) else dict(raw)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table with protocol = \"...\", got {raw!r}")
    name = table.pop("protocol", "auto")
    if name == "auto":
        if table:
            raise ConfigError(f"{where}: protocol 'auto' takes no options; name a protocol (`cimkit list evals`)")
        return None
    try:
        cls = EVALS.get(name)
    except ConfigError as e:
        raise ConfigError(f"{where}.protocol: {e}") from None
    return cls(cls.config_cls.from_dict(table, where=f"{where}."))


def run_pipeline(ctx: RunContext, steps: list[Step], protocol: EvalProtocol | None, variant: str,
                 model: nn.Module | None = None) -> tuple[PipelineState, dict, dict, dict]:  # fmt: skip
    """Run ``steps`` on a copy of the baseline (or ``model``), then evaluate with ``protocol``
    (None: the protocol the steps asked for). Returns ``(state, metrics, units, details)``."""
    state = PipelineState(model=ctx.baseline_copy() if model is None else model)
    for step in steps:
        step.run(state, ctx)
    proto = protocol
    if proto is None:
        cls = EVALS.get(state.eval_protocol)
        proto = cls(cls.config_cls())
    metrics, units, details = proto.evaluate(state, ctx, variant)
    details = {**details, "eval_protocol": proto.name}
    return state, metrics, units, details


@dataclass
class PipelineConfig(Config):
    """``steps``: step tables run in order (each with ``op``); ``eval``: the evaluation protocol
    table (``protocol`` and its options) or ``auto``."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, Any] | str = "auto"

    def __post_init__(self) -> None:
        self.parsed()  # validate every step and the protocol now, before any training

    def parsed(self, variant: str = "") -> tuple[list[Step], EvalProtocol | None]:
        return parse_steps(self.steps, variant=variant), parse_eval(self.eval)


@VARIANTS.register("pipeline", "transform steps in order (quantize, finetune, analog, ...) then an evaluation protocol")
class PipelineVariant(Variant):
    config_cls = PipelineConfig
    cfg: PipelineConfig
    tiny = {"steps": [{"op": "quantize", "w_bits": 4, "calib_batches": 1}, {"op": "finetune", "epochs": 1}]}

    def run(self, ctx: RunContext) -> VariantResult:
        steps, proto = self.cfg.parsed(self.name)
        state, metrics, units, details = run_pipeline(ctx, steps, proto, self.name)
        fp32 = ctx.fp32_metrics()
        p = ctx.primary
        out_m = {**state.metrics, **metrics, f"fp32_{p}": fp32[p]}
        out_u = {**state.units, **units, f"fp32_{p}": ctx.task.units.get(p, "")}
        return VariantResult(metrics=out_m, units=out_u, details={**state.details, **details,
                             "steps": [s.op for s in steps]}, model=state.model)  # fmt: skip

    def check(self, model: nn.Module, example: Any) -> None:
        steps, _ = self.cfg.parsed(self.name)
        m = copy.deepcopy(model)
        for s in steps:
            m = s.dry_run(m, example)

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        """The sections of every step that ran (in order of first appearance), then of every protocol."""
        out: list[Any] = []
        ops = dict.fromkeys(op for r in records for op in r.get("details", {}).get("steps", []))
        for op in ops:
            if op in STEPS:
                out.extend(STEPS.get(op).report_sections(
                    [r for r in records if op in r.get("details", {}).get("steps", [])]))
        for name in dict.fromkeys(r.get("details", {}).get("eval_protocol", "plain") for r in records):
            if name in EVALS:
                out.extend(EVALS.get(name).report_sections(
                    [r for r in records if r.get("details", {}).get("eval_protocol", "plain") == name]))
        return out
