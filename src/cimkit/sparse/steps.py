"""Pipeline steps of the sparsity concern: ``prune``, ``regularize``, ``remove``; eval protocol ``sparse``.

::

    steps = [
      { op = "regularize", kind = "group_lasso", patterns = ["filter", "channel"], strength = 5e-3,
        finetune = { epochs = 3 }, threshold = 0.05 },         # SSL, then masks from the threshold
      { op = "prune", pattern = "filter", sparsity = 0.5, schedule = "gradual",
        finetune = { epochs = 3 } },                            # or one_shot / iterative
      { op = "remove" },                                        # physically smaller dense layers
      { op = "quantize", w_bits = 4 }, { op = "analog" },
    ]

Every step leaves ``details["sparse"]`` (the hook the cost model reads), a dict with

* ``before`` / ``after``: :func:`cimkit.sparse.report.model_record` of the model before the first
  sparsity step and after the last one (per-layer ``name, shape, weights, nonzero, sparsity,
  arrays, occupied_arrays, adc_bits``; totals ``params, macs, weights, nonzero, sparsity, arrays,
  occupied_arrays, adc_bits``; the tile ``geometry``);
* ``prune`` / ``regularize`` / ``removal``: what each step did; ``latency_ms``: measured CPU forward
  time before and after removal (``remove`` step).

and metrics ``sparsity`` (weights), ``macs_ratio``, ``occupied_arrays``, ``adc_bits`` (and after
``remove``: ``params``, ``latency_speedup``). When no other step asked for an evaluation protocol,
the ``sparse`` protocol evaluates (the test set once, like ``plain``) and adds the report section.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from torch import nn

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import RunContext
from cimkit.experiment.pipeline import EVALS, STEPS, PipelineState, PlainEval, Step
from cimkit.nn.adapters import standardize_
from cimkit.nn.walk import select
from cimkit.sparse.budget import sparsity_for_macs
from cimkit.sparse.config import Pattern, SparsityConfig
from cimkit.sparse.coupled import coupled_dims, selectable
from cimkit.sparse.deps import analyze
from cimkit.sparse.masks import set_mask
from cimkit.sparse.regularizers import Regularizer, RegularizerCallback, RegularizerConfig
from cimkit.sparse.removal import remove_
from cimkit.sparse.report import forward_latency_ms, model_record, sparse_sections
from cimkit.sparse.schedules import cubic_sparsity, iterative_sparsities
from cimkit.sparse.sparsify import sparsify_
from cimkit.train import FinetuneConfig
from cimkit.train.loop import Callback

__all__ = ["PruneSchedule", "PruneStep", "PruneStepConfig", "RegularizeStep", "RegularizeStepConfig", "RemoveStep",
           "RemoveStepConfig", "SparseEval"]  # fmt: skip

EXAMPLE_BATCH = 2  # inputs traced for the dependency analysis and the shape passes


class PruneSchedule(str, Enum):
    ONE_SHOT = "one_shot"
    ITERATIVE = "iterative"
    GRADUAL = "gradual"


def _sparsity_fields(cfg: Config) -> SparsityConfig:
    names = set(SparsityConfig.__dataclass_fields__)
    return SparsityConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k in names})


def _record(state: PipelineState, ctx: RunContext, model: nn.Module, key: str, tile: tuple[int, int]) -> dict:
    sp = state.details.setdefault("sparse", {})
    rec = model_record(model, ctx.example_input(EXAMPLE_BATCH), *tile)
    if key == "before" and "before" in sp:
        return sp["before"]
    sp[key] = rec
    return rec


def _metrics(state: PipelineState) -> None:
    sp = state.details["sparse"]
    b, a = sp["before"]["total"], sp["after"]["total"]
    state.add_metric("sparsity", a["sparsity"], "fraction")
    state.add_metric("macs_ratio", a["macs"] / max(b["macs"], 1), "fraction")
    state.add_metric("params", float(a["params"]), "count")
    state.add_metric("occupied_arrays", float(a["occupied_arrays"]), "count")
    state.add_metric("occupied_arrays_before", float(b["occupied_arrays"]), "count")
    state.add_metric("adc_bits", float(a["adc_bits"]), "bits")
    if state.eval_protocol == "plain":
        state.eval_protocol = "sparse"


# ----------------------------------------------------------------------------- prune


@dataclass
class PruneStepConfig(SparsityConfig):
    """:class:`~cimkit.sparse.SparsityConfig` fields, plus the schedule:

    * ``schedule``: ``one_shot`` (prune, then fine-tune with ``finetune`` if given), ``iterative``
      (``rounds`` rounds of prune to ``1 - (1 - s)^(k/rounds)`` + ``finetune``) or ``gradual`` (Zhu &
      Gupta's cubic schedule from ``initial_sparsity`` to ``sparsity`` in ``events`` pruning events
      spread over the first ``end_fraction`` of the ``finetune`` steps);
    * ``target_macs`` > 0 (coupled patterns): choose the sparsity so that the physically shrunk model
      keeps this fraction of the MACs (bisection, :mod:`cimkit.sparse.budget`).
    """

    schedule: PruneSchedule = PruneSchedule.ONE_SHOT
    rounds: int = 3
    finetune: FinetuneConfig | None = None
    initial_sparsity: float = 0.0
    events: int = 10
    end_fraction: float = 0.75
    target_macs: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.schedule = as_enum("schedule", self.schedule, PruneSchedule)
        check_range("rounds", self.rounds, 1, 1000)
        check_range("initial_sparsity", self.initial_sparsity, 0.0, self.sparsity)
        check_range("events", self.events, 1, 100_000)
        check_range("end_fraction", self.end_fraction, 0.0, 1.0, lo_open=True)
        check_range("target_macs", self.target_macs, 0.0, 1.0)
        if self.schedule != PruneSchedule.ONE_SHOT:
            if self.pattern == Pattern.NM:
                raise ConfigError(f"schedule: {self.schedule.value!r} needs a pattern with a sparsity level; N:M has "
                                  f"none; allowed: one_shot")  # fmt: skip
            if self.finetune is None or self.finetune.epochs == 0:
                raise ConfigError(f"finetune: schedule {self.schedule.value!r} fine-tunes between pruning steps; "
                                  f"give finetune = {{ epochs = ... }} with epochs >= 1")  # fmt: skip
        if self.target_macs > 0 and not self.is_coupled():
            raise ConfigError("target_macs: needs a coupled pattern (filter/channel with coupled = true, head, depth)")


class GradualPruner(Callback):
    """Re-prunes to :func:`cimkit.sparse.schedules.cubic_sparsity` at every pruning event."""

    def __init__(self, cfg: SparsityConfig, s_i: float, s_f: float, dt: int, n: int, graph: Any) -> None:
        self.cfg, self.s_i, self.s_f, self.dt, self.n, self.graph = cfg, s_i, s_f, dt, n, graph
        self.history: list[tuple[int, float]] = []

    def prune(self, model: nn.Module, step: int) -> None:
        s = cubic_sparsity(step, self.s_i, self.s_f, 0, self.n, self.dt)
        if self.history and abs(self.history[-1][1] - s) < 1e-12:
            return
        sparsify_(model, self.cfg.replace(sparsity=s), graph=self.graph)
        self.history.append((step, s))

    def after_step(self, model: nn.Module, step: int) -> None:
        if step % self.dt == 0 and step <= self.n * self.dt:
            self.prune(model, step)


def _prime_masks(model: nn.Module, cfg: SparsityConfig, graph: Any) -> None:
    """All-ones masks on every tensor a later pruning event may mask (the state_dict keys then do
    not change during training, so a resumed run loads its checkpoint)."""
    if cfg.is_coupled():
        names = set(selectable(model, select(model, skip=cfg.skip), cfg.skip))
        if cfg.pattern == Pattern.DEPTH:
            mods = dict(model.named_modules())
            targets = [(n, p) for b in graph.branches for n in b.layers + b.norms for p in ("weight", "bias")
                       if getattr(mods[n], p, None) is not None]  # fmt: skip
        else:
            targets = [(m.module, m.param) for d in coupled_dims(graph, cfg.pattern, names) for m in d.members()
                       if m.param in ("weight", "bias")]  # fmt: skip
        for n, p in dict.fromkeys(targets):
            mod = model.get_submodule(n)
            t = getattr(mod, p)
            set_mask(mod, p, t.new_ones(t.shape), where=n)
    else:
        sparsify_(model, cfg.replace(sparsity=0.0))


@STEPS.register("prune", "prune by magnitude (SparsityConfig fields; one_shot / iterative / gradual with fine-tuning)")
class PruneStep(Step):
    op = "prune"
    config_cls = PruneStepConfig
    tiny = {"pattern": "filter", "sparsity": 0.25}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: PruneStepConfig = self.cfg  # type: ignore[assignment]
        scfg = _sparsity_fields(cfg)
        model = state.model = standardize_(state.model)  # GPT-2's Conv1D as an nn.Linear
        tile = (cfg.tile_rows, cfg.tile_cols)
        _record(state, ctx, model, "before", tile)
        example = ctx.example_input(EXAMPLE_BATCH)
        graph = analyze(model, example) if scfg.is_coupled() else None
        s_f = cfg.sparsity
        info: dict[str, Any] = {"label": scfg.label(), "schedule": cfg.schedule.value}
        if cfg.target_macs > 0:
            s_f, ratio = sparsity_for_macs(model, scfg, example, cfg.target_macs)
            info.update({"target_macs": cfg.target_macs, "found_sparsity": s_f, "found_macs_ratio": ratio})
        scfg = scfg.replace(sparsity=s_f)
        ft = cfg.finetune
        fits = []
        if cfg.schedule == PruneSchedule.ONE_SHOT:
            sparsify_(model, scfg, graph=graph, example_input=example)
            if ft is not None and ft.epochs > 0:
                fits.append(self._finetune(state, ctx, ft, [], "one_shot"))
        elif cfg.schedule == PruneSchedule.ITERATIVE:
            sched = iterative_sparsities(s_f, cfg.rounds)
            info["sparsities"] = sched
            for k, s in enumerate(sched):
                sparsify_(model, scfg.replace(sparsity=s), graph=graph, example_input=example)
                fits.append(self._finetune(state, ctx, ft, [], f"round{k}"))  # type: ignore[arg-type]
        else:
            steps_total = ft.epochs * len(ctx.train_loader(ft.batch_size or ctx.train_cfg.batch_size))  # type: ignore[union-attr]
            dt = max(1, int(cfg.end_fraction * steps_total) // cfg.events)
            _prime_masks(model, scfg, graph)
            cb = GradualPruner(scfg, cfg.initial_sparsity, s_f, dt, cfg.events, graph)
            cb.prune(model, 0)
            fits.append(self._finetune(state, ctx, ft, [cb], "gradual"))  # type: ignore[arg-type]
            sparsify_(model, scfg, graph=graph)  # the final level (also after a resumed, completed run)
            info.update({"prune_every": dt, "events": [[t, s] for t, s in cb.history]})
        info["sparsity"] = s_f
        sp = state.details.setdefault("sparse", {})
        sp["prune"] = {**info, "finetune": fits}
        _record(state, ctx, model, "after", tile)
        _metrics(state)

    def _finetune(self, state: PipelineState, ctx: RunContext, ft: FinetuneConfig, extra: list, part: str) -> dict:
        res = ctx.finetune(state.model, ft, step_hooks=state.step_hooks, callbacks=[*state.callbacks, *extra],
                           tag=f"{self.tag}-{part}", key={**self.cache_key, "part": part})  # fmt: skip
        state.seconds[f"step{self.index}-{self.op}-{part}"] = res["seconds"]
        return {"part": part, "seconds": res["seconds"], "history": res["history"]}

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        return sparsify_(model, _sparsity_fields(self.cfg), example_input=example)


# ----------------------------------------------------------------------------- regularize


@dataclass
class RegularizeStepConfig(RegularizerConfig):
    """:class:`~cimkit.sparse.regularizers.RegularizerConfig` fields, plus ``finetune`` (the
    regularized training run), ``threshold`` (groups whose norm is at most this fraction of their
    structure's largest are pruned after training; 0 = keep every group unmasked) and the tile
    geometry of the report (``tile_rows``/``tile_cols``)."""

    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    threshold: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("threshold", self.threshold, 0.0, 1.0)

    def regularizer_config(self) -> RegularizerConfig:
        names = set(RegularizerConfig.__dataclass_fields__)
        return RegularizerConfig.from_dict({k: v for k, v in self.to_dict().items() if k in names})


@STEPS.register("regularize", "train with an SSL group-Lasso / DeepHoyer regularizer, then mask the groups it zeroed")
class RegularizeStep(Step):
    op = "regularize"
    config_cls = RegularizeStepConfig
    tiny = {"strength": 1e-4, "finetune": {"epochs": 1}}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: RegularizeStepConfig = self.cfg  # type: ignore[assignment]
        model = state.model = standardize_(state.model)
        tile = (cfg.tile_rows, cfg.tile_cols)
        _record(state, ctx, model, "before", tile)
        reg = Regularizer(model, cfg.regularizer_config(), ctx.example_input(EXAMPLE_BATCH))
        cb = RegularizerCallback(reg)
        res = ctx.finetune(model, cfg.finetune, step_hooks=state.step_hooks, callbacks=[*state.callbacks, cb],
                           tag=self.tag, key=self.cache_key)  # fmt: skip
        state.seconds[f"step{self.index}-{self.op}"] = res["seconds"]
        pruned = reg.to_masks_(model, cfg.threshold) if cfg.threshold > 0 else {}
        state.details.setdefault("sparse", {})["regularize"] = {
            "kind": cfg.kind.value, "patterns": [p.value for p in cfg.patterns], "strength": cfg.strength,
            "threshold": cfg.threshold, "pruned_groups": pruned, "final_penalty": float(reg(model).detach()),
            "history": res["history"],
        }  # fmt: skip
        _record(state, ctx, model, "after", tile)
        _metrics(state)

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        Regularizer(model, self.cfg.regularizer_config(), example)  # type: ignore[attr-defined]
        return model


# ----------------------------------------------------------------------------- remove


@dataclass
class RemoveStepConfig(Config):
    """Physically remove pruned channels and heads (:func:`cimkit.sparse.remove_`). ``keep_masks``:
    re-apply the remaining masks (so a later fine-tuning keeps finer-grained zeros);
    ``latency_batch`` / ``latency_rounds``: the measured CPU forward (median over rounds, before and
    after, interleaved; 0 rounds = not measured); ``tile_rows``/``tile_cols``: the report geometry."""

    keep_masks: bool = True
    latency_batch: int = 256
    latency_rounds: int = 20
    tile_rows: int = 128
    tile_cols: int = 128

    def __post_init__(self) -> None:
        check_range("latency_batch", self.latency_batch, 1, 1 << 20)
        check_range("latency_rounds", self.latency_rounds, 0, 10_000)
        check_range("tile_rows", self.tile_rows, 1, 1 << 16)
        check_range("tile_cols", self.tile_cols, 1, 1 << 16)


@STEPS.register("remove", "physically remove pruned channels/heads: smaller dense layers, same outputs")
class RemoveStep(Step):
    op = "remove"
    config_cls = RemoveStepConfig
    tiny = {"latency_rounds": 2, "latency_batch": 8}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: RemoveStepConfig = self.cfg  # type: ignore[assignment]
        state.model = standardize_(state.model)
        tile = (cfg.tile_rows, cfg.tile_cols)
        _record(state, ctx, state.model, "before", tile)
        masked = copy.deepcopy(state.model) if cfg.latency_rounds > 0 else None
        res = remove_(state.model, ctx.example_input(EXAMPLE_BATCH), keep_masks=cfg.keep_masks)
        sp = state.details["sparse"]
        sp["removal"] = res.to_dict()
        _record(state, ctx, state.model, "after", tile)
        if masked is not None:
            x = ctx.data.x_test[: cfg.latency_batch].to(ctx.device)
            lat = forward_latency_ms({"before": masked, "after": state.model}, x, rounds=cfg.latency_rounds)
            sp["latency_ms"] = {**lat, "batch": int(x.shape[0]), "rounds": cfg.latency_rounds}
            state.add_metric("latency_speedup", lat["before"] / max(lat["after"], 1e-9), "ratio")
        _metrics(state)

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        remove_(model, example)
        return model


# ----------------------------------------------------------------------------- evaluation


@dataclass
class SparseEvalConfig(Config):
    """The test set, once (the sparsity steps' report section is added)."""


@EVALS.register("sparse", "the test set once, plus the sparsity report section (set by prune/regularize/remove)")
class SparseEval(PlainEval):
    name = "sparse"
    config_cls = SparseEvalConfig

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return sparse_sections(records)
