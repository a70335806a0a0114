"""One call from a trained model to a per-layer bit plan: Hessian → Ω table → ILP (HAWQ-V2/V3).

``mixed_precision(model, data, budget=...)`` runs :func:`analyze` (Hutchinson traces, per-layer
costs, Ω) then :meth:`Analysis.allocate` (the ILP under the budgets) and returns a :class:`BitPlan`;
with ``apply=True`` the model is quantized with it (and calibrated), with ``qat=TrainConfig(...)``
it is then fine-tuned. Without data (``data=None``) the Hessian is taken on ZeroQ distilled inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cimkit.config import Config, check_choice, check_range
from cimkit.cost import ADDITIVE_FIELDS, SPECS, HardwareSpec, get_spec, price_layer
from cimkit.cost.estimate import wire_mm
from cimkit.errors import ConfigError, DataError, did_you_mean, unknown
from cimkit.mixed._common import LossFn, as_batches, log
from cimkit.mixed.allocate import ParetoPoint, pareto_frontier, random_plans, solve_ilp
from cimkit.mixed.hessian import HessianInfo, hessian_trace
from cimkit.mixed.plan import BitPlan, plan_from_choice, uniform_choice
from cimkit.mixed.sensitivity import SensitivityTable, TilesFn, sensitivity
from cimkit.mixed.zeroq import ZeroQConfig, distill_data

BUDGET_FIELDS = ("size_bytes", "size_uniform_bits", "bops", "bops_uniform_bits", "tiles")  # MixedConfig fields
UNIFORM = "_uniform_bits"  # "<cost>_uniform_bits": the cost of uniform N-bit weights
DEFAULT_SPEC = "rram_22nm"


def budget_costs() -> tuple[str, ...]:
    """Every cost a budget may bound: ``size_bytes``, ``bops``, ``tiles`` and any additive field of
    :class:`cimkit.cost.LayerCost` (energy, latency, ADC conversions, area, ...)."""
    return tuple(dict.fromkeys(("size_bytes", "bops", "tiles", *ADDITIVE_FIELDS)))


def _canonical(name: str) -> str:
    """``size_uniform_bits`` (the config field) is ``size_bytes_uniform_bits``."""
    return "size_bytes" + UNIFORM if name == "size_uniform_bits" else name


def check_budget_name(name: str) -> None:
    """ConfigError unless ``name`` is a cost or ``<cost>_uniform_bits``."""
    name = _canonical(name)
    base = name[: -len(UNIFORM)] if name.endswith(UNIFORM) else name
    if base not in budget_costs():
        raise ConfigError(f"unknown budget '{name}'{did_you_mean(base, budget_costs())}; allowed: a cost "
                          f"({', '.join(budget_costs())}) or <cost>{UNIFORM}")  # fmt: skip


@dataclass
class MixedConfig(Config):
    """Mixed-precision search settings (flat; budgets left ``None`` do not constrain).

    ``w_observer``: weight range estimator of the quantizer the plan will use (``minmax``, ``mse``,
    ``percentile``; None = min/max); Ω is computed with that same quantizer.
    Budgets: ``size_bytes`` (weight bytes of the quantizable layers) or ``size_uniform_bits`` (the
    size those weights have at a uniform N bits, N may be fractional); ``bops`` (bit operations per
    sample) or ``bops_uniform_bits`` (BOPs of uniform N-bit weights with ``a_bits`` activations);
    ``tiles`` (crossbar tiles, from ``tile_rows``/``tile_cols``/``bits_per_cell`` or a callable).
    ``budget``: bounds on any other additive cost (:func:`budget_costs`: ``energy_uj``, ``latency_us``,
    ``adc_conversions``, ``area_mm2``, ...) or ``<cost>_uniform_bits`` (that cost at uniform N bits),
    priced per layer on the hardware ``spec`` (a :data:`cimkit.cost.SPECS` name; None: ``rram_22nm``
    with ``tile_rows x tile_cols`` arrays of ``bits_per_cell``-bit cells); with ``spec`` set, ``tiles``
    are that spec's too.
    ``ties``: groups of layer names sharing one bit width. ``fixed``: layer name -> bits it must get.
    Hessian: at most ``probes`` Rademacher probes (stop on relative change < ``tol``) on
    ``hessian_samples`` samples (``hessian_blockwise``: one block product per layer and probe,
    lower variance for small layers at L× the cost). ``data_free``: compute the Hessian on ZeroQ distilled data.
    """

    bits: list[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])
    a_bits: int | None = 8
    per_channel: bool = True
    w_symmetric: bool = True
    w_observer: str | None = None
    size_bytes: float | None = None
    size_uniform_bits: float | None = None
    bops: float | None = None
    bops_uniform_bits: float | None = None
    tiles: float | None = None
    budget: dict[str, float] = field(default_factory=dict)
    spec: str | None = None
    tile_rows: int = 256
    tile_cols: int = 256
    bits_per_cell: int = 1
    ties: list[list[str]] = field(default_factory=list)
    fixed: dict[str, int] = field(default_factory=dict)
    probes: int = 100
    min_probes: int = 10
    tol: float = 1e-3
    hessian_samples: int = 512
    hessian_batch_size: int = 128
    hessian_blockwise: bool = False
    data_free: bool = False
    zeroq_samples: int = 256
    zeroq_iters: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.bits:
            raise ConfigError("bits: at least one candidate bit width is needed")
        for b in self.bits:
            check_range("bits", b, 1, 16)
        if len(set(self.bits)) != len(self.bits):
            raise ConfigError(f"bits: candidates must be distinct, got {self.bits}")
        self.bits = sorted(self.bits)
        if self.w_observer is not None:
            check_choice("w_observer", self.w_observer, ("minmax", "percentile", "mse"))
        if self.a_bits is not None:
            check_range("a_bits", self.a_bits, 2, 16)
        for name in BUDGET_FIELDS:
            v = getattr(self, name)
            if v is not None:
                check_range(name, v, 0.0, lo_open=True)
        for name, v in self.budget.items():
            check_budget_name(name)
            check_range(f"budget.{name}", v, 0.0, lo_open=True)
        if self.spec is not None:
            SPECS.get(self.spec)
        check_range("tile_rows", self.tile_rows, 1)
        check_range("tile_cols", self.tile_cols, 1)
        check_range("bits_per_cell", self.bits_per_cell, 1)
        for name, b in self.fixed.items():
            if b not in self.bits:
                raise ConfigError(f"fixed.{name}: {b} is not a candidate; allowed: {self.bits}")
        check_range("probes", self.probes, 1)
        check_range("min_probes", self.min_probes, 1)
        check_range("tol", self.tol, 0.0, lo_open=True)
        check_range("hessian_samples", self.hessian_samples, 1)
        check_range("hessian_batch_size", self.hessian_batch_size, 1)
        check_range("zeroq_samples", self.zeroq_samples, 1)
        check_range("zeroq_iters", self.zeroq_iters, 0)

    def budgets(self) -> dict[str, float]:
        """The budget fields that are set, then the ``budget`` table."""
        out = {k: getattr(self, k) for k in BUDGET_FIELDS if getattr(self, k) is not None}
        out.update(self.budget)
        return out

    def hardware(self) -> HardwareSpec:
        """The spec the crossbar and energy costs are priced on (see the class docstring)."""
        if self.spec is not None:
            return get_spec(self.spec)
        return get_spec(DEFAULT_SPEC, tile_rows=self.tile_rows, tile_cols=self.tile_cols,
                        bits_per_cell=self.bits_per_cell, weight_pair="offset")  # fmt: skip


def _budget_dict(budget: Any) -> dict[str, float]:
    """``budget`` as {field: value}: a number means weight bytes; a dict/Config names fields."""
    if budget is None:
        return {}
    if isinstance(budget, bool):
        raise ConfigError(f"budget: expected bytes or a table of budgets, got {budget!r}")
    if isinstance(budget, (int, float)):
        check_range("budget", budget, 0.0, lo_open=True)
        return {"size_bytes": float(budget)}
    if isinstance(budget, Config):
        budget = budget.to_dict()
    if not isinstance(budget, dict):
        raise ConfigError(f"budget: expected bytes or a table of budgets, got {type(budget).__name__}")
    out = {}
    for k, v in budget.items():
        check_budget_name(k)
        if v is not None:
            check_range(f"budget.{k}", v, 0.0, lo_open=True)
            out[k] = float(v)
    return out


@dataclass
class Analysis:
    """The Hessian, the Ω table and the cost tables of one model; allocate plans from it.

    ``costs``: name -> ``(L, B)`` table, computed when a budget or a plan first needs it
    (:meth:`cost`): ``size_bytes``, ``bops``, ``tiles`` and any additive field of
    :class:`cimkit.cost.LayerCost` priced on :meth:`MixedConfig.hardware`."""

    hessian: HessianInfo
    table: SensitivityTable
    a_bits: int | None
    costs: dict[str, np.ndarray]  # name -> (L, B)
    cfg: MixedConfig
    tiles_fn: TilesFn | None = None

    @property
    def names(self) -> list[str]:
        return self.table.names

    @property
    def spec(self) -> HardwareSpec:
        return self.cfg.hardware()

    def wire_mm(self) -> float:
        """Interconnect length of the chip the costs are priced on: ``sqrt(area) / 2`` of the layers'
        crossbars at the spec's own widths (:mod:`cimkit.cost.estimate`)."""
        spec = self.spec
        return wire_mm([price_layer(r, spec, distance_mm=0.0) for r in self.table.records])

    def cost(self, name: str) -> np.ndarray:
        """The ``(L, B)`` table of cost ``name`` (computed once)."""
        if name in self.costs:
            return self.costs[name]
        if name not in budget_costs():
            raise unknown("cost", name, budget_costs())
        if name == "size_bytes":
            tab = self.table.size_bytes()
        elif name == "bops":
            tab = self.table.bops(self.a_bits)
        elif name == "tiles" and self.cfg.spec is None:
            tab = self.table.tiles(self.tiles_fn, tile_rows=self.cfg.tile_rows, tile_cols=self.cfg.tile_cols,
                                   bits_per_cell=self.cfg.bits_per_cell)  # fmt: skip
        else:
            tab = self.table.cost(name, self.spec, self.a_bits, distance_mm=self.wire_mm())
        self.costs[name] = tab
        return tab

    def uniform_cost(self, what: str, bits: float) -> float:
        """Total cost ``what`` when every layer has ``bits``: exact for ``size_bytes`` and ``bops`` (both
        linear in the bits, so N may be fractional); other costs at a candidate width, or linearly
        interpolated between the two candidates around a fractional N."""
        if what == "size_bytes":
            return float(sum(self.table.layer_size(layer, bits) for layer in self.table.layers))
        if what == "bops":
            return float(sum(layer.macs for layer in self.table.layers) * bits * float(self.a_bits or 32))
        cands = list(self.table.bits)
        tot = self.cost(what).sum(axis=0)  # (B,)
        if bits in cands:
            return float(tot[cands.index(bits)])
        if not cands[0] < bits < cands[-1]:
            raise ConfigError(f"{what}{UNIFORM}: {bits} is outside the candidates {cands}; allowed: "
                              f"[{cands[0]}, {cands[-1]}]")  # fmt: skip
        j = next(i for i, b in enumerate(cands) if b > bits)
        w = (bits - cands[j - 1]) / (cands[j] - cands[j - 1])
        return float((1 - w) * tot[j - 1] + w * tot[j])

    def resolve_budgets(self, budget: Any = None) -> dict[str, float]:
        """Constraints {cost name: bound} from ``budget`` (or the config's budget fields)."""
        b = _budget_dict(budget) if budget is not None else self.cfg.budgets()
        out: dict[str, float] = {}

        def put(k: str, v: float) -> None:
            out[k] = min(out.get(k, np.inf), v)

        for k, v in b.items():
            k = _canonical(k)
            if k.endswith(UNIFORM):
                base = k[: -len(UNIFORM)]
                put(base, self.uniform_cost(base, v))
            else:
                put(k, v)
        return out

    def _ties(self, ties: Sequence[Sequence[str]] | None) -> list[list[int]]:
        idx = {n: i for i, n in enumerate(self.names)}
        out = []
        for group in ties if ties is not None else self.cfg.ties:
            g = []
            for n in group:
                if n not in idx:
                    raise unknown("layer in ties", n, idx)
                g.append(idx[n])
            out.append(g)
        return out

    def _allowed(self, fixed: dict[str, int] | None) -> np.ndarray | None:
        fixed = self.cfg.fixed if fixed is None else fixed
        if not fixed:
            return None
        mask = np.ones((len(self.names), len(self.table.bits)), dtype=bool)
        for n, b in fixed.items():
            if n not in self.names:
                raise unknown("layer in fixed", n, self.names)
            if b not in self.table.bits:
                raise ConfigError(f"fixed.{n}: {b} is not a candidate; allowed: {self.table.bits}")
            i = self.names.index(n)
            mask[i] = False
            mask[i, self.table.bits.index(b)] = True
        return mask

    def plan(self, choice: np.ndarray | Sequence[int], method: str, budget: dict[str, float] | None = None) -> BitPlan:
        """A :class:`BitPlan` from candidate indices (with the totals of every cost computed so far)."""
        extra = {k: v for k, v in self.costs.items() if k not in ("size_bytes", "bops", "tiles")}
        return plan_from_choice(self.table, np.asarray(choice), a_bits=self.a_bits, method=method, budget=budget,
                                tiles=self.cost("tiles"), costs=extra)  # fmt: skip

    def allocate(
        self,
        budget: Any = None,
        *,
        ties: Sequence[Sequence[str]] | None = None,
        fixed: dict[str, int] | None = None,
    ) -> BitPlan:
        """Minimum-Ω plan under the budgets (HAWQ-V3 ILP). ``budget``: bytes, or a dict of costs
        (:func:`budget_costs`, ``<cost>_uniform_bits``); None uses the config's budget fields (no budget: all layers get the
        most bits)."""
        budgets = self.resolve_budgets(budget)
        costs = {k: self.cost(k) for k in budgets}
        choice = solve_ilp(self.table.omega, costs, budgets, ties=self._ties(ties), allowed=self._allowed(fixed))
        plan = self.plan(choice, "hessian-ilp", budgets)
        log.info("mixed precision: %s", plan)
        return plan

    def uniform(self, bits: int) -> BitPlan:
        """Every layer at ``bits`` (a candidate)."""
        return self.plan(uniform_choice(self.table, bits), f"uniform-{bits}")

    def random(self, budget: float, n: int, *, seed: int = 0, min_fraction: float = 0.95,
               cost: str = "size_bytes") -> list[BitPlan]:  # fmt: skip
        """``n`` random plans with total ``cost`` (default: storage) in [min_fraction·budget, budget]."""
        ch = random_plans(self.cost(cost), budget, n, seed=seed, min_fraction=min_fraction, ties=self._ties(None))
        return [self.plan(c, "random", {cost: budget}) for c in ch]

    def pareto(self, cost: str = "size_bytes", max_points: int | None = 2000) -> list[ParetoPoint]:
        """The exact (ΣΩ, Σcost) Pareto frontier (HAWQ-V2), cheapest first."""
        return pareto_frontier(self.table.omega, self.cost(cost), ties=self._ties(None), max_points=max_points)

    def to_dict(self) -> dict[str, Any]:
        return {"hessian": self.hessian.to_dict(), "table": self.table.to_dict()}


def _example_and_data(
    model: nn.Module, data: Any, cfg: MixedConfig, input_shape: Sequence[int] | None, device: Any, progress: bool
) -> tuple[Any, torch.Tensor]:
    """The data the Hessian uses (real or distilled) and an example input for layer shapes."""
    if data is None or cfg.data_free:
        if input_shape is None:
            if data is None:
                raise DataError("no data: pass data, or input_shape=(C, H, W) to use ZeroQ distilled data")
            first = as_batches(model, data, batch_size=1, max_samples=1, device=device)[0][0]
            input_shape = tuple(first.shape[1:])
        zq = ZeroQConfig(n_samples=min(cfg.zeroq_samples, cfg.hessian_samples), iters=cfg.zeroq_iters, seed=cfg.seed)
        x = distill_data(model, tuple(input_shape), zq, device=device, progress=progress)
        return x, x[:1]
    batches = as_batches(model, data, batch_size=cfg.hessian_batch_size, max_samples=cfg.hessian_samples, device=device)
    return batches, batches[0][0][:1]


def _calib_inputs(
    model: nn.Module, data: Any, cfg: MixedConfig, input_shape: Sequence[int] | None, device: Any, progress: bool
) -> list[torch.Tensor]:
    """Activation-calibration inputs: batches of ``data``, or ZeroQ distilled data without it."""
    if data is not None:
        batches = as_batches(
            model, data, batch_size=cfg.hessian_batch_size, max_samples=cfg.hessian_samples, device=device
        )
        return [x for x, _ in batches]
    if input_shape is None:
        raise DataError("no data: pass data, or input_shape=(C, H, W) to use ZeroQ distilled data")
    zq = ZeroQConfig(n_samples=cfg.zeroq_samples, iters=cfg.zeroq_iters, seed=cfg.seed)
    return [distill_data(model, tuple(input_shape), zq, device=device, progress=progress)]


def analyze(
    model: nn.Module,
    data: Any = None,
    cfg: MixedConfig | None = None,
    *,
    layers: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    tiles: TilesFn | None = None,
    hessian: HessianInfo | None = None,
    loss_fn: LossFn | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Analysis:
    """Hessian traces, Ω table and cost tables for ``model`` (see :func:`mixed_precision`).

    ``loss_fn(output, target)``: the loss whose Hessian is taken (default: cross-entropy of class
    logits; pass a task's ``loss``, e.g. ``get_task("next_token").loss``, for other tasks)."""
    cfg = cfg or MixedConfig()
    hdata, example = _example_and_data(model, data, cfg, input_shape, device, progress)
    if hessian is None:
        hessian = hessian_trace(
            model,
            hdata,
            layers=layers,
            loss_fn=loss_fn,
            max_probes=cfg.probes,
            min_probes=min(cfg.min_probes, cfg.probes),
            tol=cfg.tol,
            seed=cfg.seed,
            max_samples=cfg.hessian_samples,
            batch_size=cfg.hessian_batch_size,
            device=device,
            progress=progress,
            blockwise=cfg.hessian_blockwise,
        )
    table = sensitivity(
        model,
        hessian,
        example,
        cfg.bits,
        per_channel=cfg.per_channel,
        symmetric=cfg.w_symmetric,
        observer=cfg.w_observer,
    )
    table.act_quant = cfg.a_bits is not None
    analysis = Analysis(hessian=hessian, table=table, a_bits=cfg.a_bits, costs={}, cfg=cfg, tiles_fn=tiles)
    for name in ("size_bytes", "bops", "tiles"):
        analysis.cost(name)
    return analysis


def mixed_precision(
    model: nn.Module,
    data: Any = None,
    budget: Any = None,
    *,
    cfg: MixedConfig | None = None,
    input_shape: Sequence[int] | None = None,
    tiles: TilesFn | None = None,
    apply: bool = False,
    qat: Any = None,
    loss_fn: LossFn | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    **options: Any,
) -> BitPlan:
    """Choose one weight bit width per layer from Hessian sensitivity under ``budget``.

    Args:
        model: a trained model (Linear/Conv layers are the decisions).
        data: a loader of ``(x, y)`` batches, an ``(x, y)`` tensor pair or an input tensor;
            ``None`` uses ZeroQ distilled data (needs ``input_shape`` and BatchNorm layers).
        budget: bytes (a number) or a dict of costs (:func:`budget_costs`) or ``<cost>_uniform_bits``,
            e.g. ``{"size_uniform_bits": 4, "tiles": 120}`` or ``{"energy_uj_uniform_bits": 4}``; None:
            the ``cfg`` budget fields.
        cfg: a :class:`MixedConfig`; keyword ``options`` override its fields.
        tiles: ``tiles(layer_info, bits) -> count`` for the tile budget (default: the formula in
            :mod:`cimkit.mixed.sensitivity`).
        apply: quantize ``model`` in place with the plan (``cimkit.quant.quantize_``) and calibrate
            its activations on ``data``.
        qat: a :class:`cimkit.train.TrainConfig`: after applying, fine-tune on ``data`` (a loader).
        loss_fn: the loss whose Hessian ranks the layers (default cross-entropy of class logits;
            e.g. ``get_task("next_token").loss`` for a language model).

    Returns:
        The :class:`BitPlan` (save it with ``plan.save(path)``; reuse with ``plan.apply(model)``).
    """
    cfg = (cfg or MixedConfig()).replace(**options) if options else (cfg or MixedConfig())
    analysis = analyze(model, data, cfg, input_shape=input_shape, tiles=tiles, loss_fn=loss_fn, device=device,
                       progress=progress)  # fmt: skip
    plan = analysis.allocate(budget)
    if apply or qat is not None:
        calib = _calib_inputs(model, data, cfg, input_shape, device, progress)
        plan.apply(model, calib)
    if qat is not None:
        from cimkit.train import fit

        if data is None:
            raise DataError("qat needs labelled data (a loader of (x, y) batches)")
        fit(model, data, qat, device=device, progress=progress)
    return plan
