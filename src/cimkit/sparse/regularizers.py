"""Sparsity-inducing regularizers: SSL group Lasso (Wen et al. 2016) and DeepHoyer's Hoyer-Square /
Group-HS (Yang, Wen & Li, ICLR 2020), and the threshold that turns regularized weights into masks.

For a structure with groups ``w_g`` (the rows of :func:`cimkit.sparse.patterns.group_view`, or the
units of a coupled dimension, :func:`cimkit.sparse.coupled.unit_matrix`):

* group Lasso (SSL):  ``R_GL = Σ_g ||w_g||₂``  (Wen et al. 2016, eq. 2; ``E(W) = E_D(W) + λ_g Σ_l R_GL(W_l)``);
* Group-HS:           ``R_GHS = (Σ_g ||w_g||₂)² / Σ_g ||w_g||₂²``  (DeepHoyer eq. 8);
* Hoyer-Square:       ``R_HS = (Σ_i |w_i|)² / Σ_i w_i²``  (DeepHoyer eq. 6, elementwise);
* L1:                 ``R_L1 = Σ_i |w_i|``.

The Hoyer measures are scale invariant (a ratio of norms, between 1 and the number of groups) and
almost everywhere differentiable approximations of the number of non-zero groups. The training
objective adds ``strength · Σ_structures R``; :class:`RegularizerCallback` adds its gradient after
the task's backward pass. At a group of exactly zero norm the (sub)gradient used is 0.

Structures: for ``patterns = ["filter", "channel"]`` with ``coupled = true`` (SSL's filter- and
channel-wise sparsity for removal) every prunable channel dimension contributes its units twice,
once as their producers' filter rows (with the BatchNorm scales) and once as their consumers'
input columns; ``head`` and ``depth`` regularize attention heads and residual branches. After
training, :meth:`Regularizer.to_masks_` prunes every group whose norm is at most ``threshold``
times the largest group norm of its structure (a coupled unit is pruned when any of its structures
says so), as SSL and DeepHoyer zero the groups the regularizer drove to (near) zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.nn.adapters import standardize_
from cimkit.nn.walk import select
from cimkit.sparse.config import Pattern
from cimkit.sparse.coupled import branch_vector, coupled_dims, mask_branch, mask_units, selectable, unit_matrix
from cimkit.sparse.deps import DepGraph, analyze
from cimkit.sparse.masks import set_mask
from cimkit.sparse.patterns import group_view, mask_from_keep
from cimkit.train.loop import Callback

__all__ = ["RegKind", "Regularizer", "RegularizerCallback", "RegularizerConfig", "group_hs", "group_lasso",
           "group_norms", "hoyer_square", "l1"]  # fmt: skip

_TINY = 1e-30  # squared norms below this count as zero (their subgradient is 0)


def group_norms(rows: Tensor) -> Tensor:
    """``(G,)`` L2 norm of each row of ``rows`` (G, S); differentiable, with gradient 0 at a zero row."""
    sq = rows.pow(2).sum(-1)  # (G,)
    return torch.where(sq > _TINY, sq.clamp_min(_TINY).sqrt(), torch.zeros_like(sq))


def group_lasso(rows: Tensor) -> Tensor:
    """SSL group Lasso ``Σ_g ||w_g||₂`` over the rows of ``rows`` (G, S)."""
    return group_norms(rows).sum()


def group_hs(rows: Tensor) -> Tensor:
    """DeepHoyer Group-HS ``(Σ_g ||w_g||₂)² / Σ_g ||w_g||₂²`` (0 for an all-zero structure)."""
    n = group_norms(rows)
    den = n.pow(2).sum()
    return torch.where(den > _TINY, n.sum().pow(2) / den.clamp_min(_TINY), torch.zeros_like(den))


def hoyer_square(w: Tensor) -> Tensor:
    """DeepHoyer Hoyer-Square ``(Σ|w_i|)² / Σ w_i²`` (0 for an all-zero tensor)."""
    den = w.pow(2).sum()
    return torch.where(den > _TINY, w.abs().sum().pow(2) / den.clamp_min(_TINY), torch.zeros_like(den))


def l1(w: Tensor) -> Tensor:
    """``Σ|w_i|``."""
    return w.abs().sum()


class RegKind(str, Enum):
    GROUP_LASSO = "group_lasso"
    GROUP_HS = "group_hs"
    HOYER_SQUARE = "hoyer_square"
    L1 = "l1"


_ELEMENTWISE = (RegKind.HOYER_SQUARE, RegKind.L1)


@dataclass
class RegularizerConfig(Config):
    """``kind`` (group_lasso | group_hs | hoyer_square | l1) over the groups of ``patterns``
    (group kinds: filter, channel, shape, block, head, depth; elementwise kinds: unstructured),
    times ``strength``; ``coupled``: filter/channel groups are the coupled units of the dependency
    analysis (removable) instead of each layer's rows/columns; ``tile_rows``/``tile_cols``: block
    geometry; ``skip``: layers not regularized."""

    kind: RegKind = RegKind.GROUP_LASSO
    patterns: list[Pattern] = field(default_factory=lambda: [Pattern.FILTER])
    strength: float = 1e-4
    coupled: bool = True
    tile_rows: int = 128
    tile_cols: int = 128
    skip: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kind = as_enum("kind", self.kind, RegKind)
        if not isinstance(self.patterns, list) or not self.patterns:
            raise ConfigError(f"patterns: expected a non-empty list of patterns, got {self.patterns!r}")
        self.patterns = [as_enum(f"patterns[{i}]", p, Pattern) for i, p in enumerate(self.patterns)]
        check_range("strength", self.strength, 0.0)
        check_range("tile_rows", self.tile_rows, 1, 1 << 16)
        check_range("tile_cols", self.tile_cols, 1, 1 << 16)
        allowed = (Pattern.UNSTRUCTURED,) if self.kind in _ELEMENTWISE else (
            Pattern.FILTER, Pattern.CHANNEL, Pattern.SHAPE, Pattern.BLOCK, Pattern.HEAD, Pattern.DEPTH)  # fmt: skip
        for i, p in enumerate(self.patterns):
            if p not in allowed:
                hint = " (group kinds: group_lasso, group_hs)" if self.kind in _ELEMENTWISE else \
                    " (elementwise kinds: hoyer_square, l1)"  # fmt: skip
                raise ConfigError(f"patterns[{i}]: {p.value!r} does not go with kind {self.kind.value!r}{hint}; "
                                  f"allowed: {', '.join(a.value for a in allowed)}")  # fmt: skip
        if not isinstance(self.skip, list) or not all(isinstance(s, str) for s in self.skip):
            raise ConfigError(f"skip: expected a list of name patterns, got {self.skip!r}")

    def needs_graph(self) -> bool:
        return any(p in (Pattern.HEAD, Pattern.DEPTH) or (p in (Pattern.FILTER, Pattern.CHANNEL) and self.coupled)
                   for p in self.patterns)  # fmt: skip


@dataclass
class _Structure:
    """One regularized structure: ``rows(model)`` gives its groups (G, S); ``prune(model, keep)``
    masks the groups where ``keep`` is false; ``key`` names the coupled object it belongs to."""

    name: str
    rows: Callable[[nn.Module], Tensor]
    prune: Callable[[nn.Module, Tensor], None]
    key: Any = None


class Regularizer:
    """The regularized structures of one model for a :class:`RegularizerConfig` (see the module
    docstring); ``reg(model)`` is ``Σ_structures R`` (without ``strength``)."""

    def __init__(self, model: nn.Module, cfg: RegularizerConfig, example_input: Any = None,
                 graph: DepGraph | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        if graph is None:
            standardize_(model)  # GPT-2's Conv1D as an nn.Linear (the model itself is never such a layer here)
        self.graph = graph if graph is not None or not cfg.needs_graph() else analyze(model, example_input)
        refs = select(model, skip=cfg.skip)
        names = set(selectable(model, refs, cfg.skip))
        self.structures: list[_Structure] = []
        for p in cfg.patterns:
            if p in (Pattern.FILTER, Pattern.CHANNEL, Pattern.HEAD) and (cfg.coupled or p == Pattern.HEAD):
                roles = ("in",) if p == Pattern.CHANNEL else ("out", "norm") if p == Pattern.FILTER else ("out", "in")
                for d in coupled_dims(self.graph, p, names):  # type: ignore[arg-type]
                    self.structures.append(_Structure(
                        f"{d.name}:{p.value}", lambda m, d=d, roles=roles: unit_matrix(m, d, roles),
                        lambda m, keep, d=d: mask_units(m, d, torch.nonzero(~keep).flatten().tolist()), key=d.name))
            elif p == Pattern.DEPTH:
                branches = [b for b in self.graph.branches if all(n in names for n in b.layers)]  # type: ignore[union-attr]
                if branches:
                    def rows(m: nn.Module, bs: list = branches) -> Tensor:
                        vs = [branch_vector(m, b) for b in bs]
                        width = max(v.numel() for v in vs)
                        return torch.stack([nn.functional.pad(v, (0, width - v.numel())) for v in vs])

                    def prune(m: nn.Module, keep: Tensor, bs: list = branches) -> None:
                        for b, k in zip(bs, keep.tolist()):
                            if not k:
                                mask_branch(m, b)

                    self.structures.append(_Structure("depth", rows, prune))
            else:  # per-layer groups (and elementwise)
                for r in refs:
                    def rows(m: nn.Module, name: str = r.name, p: Pattern = p) -> Tensor:
                        return group_view(m.get_submodule(name).weight, p, cfg.tile_rows, cfg.tile_cols, name)

                    def prune(m: nn.Module, keep: Tensor, name: str = r.name, p: Pattern = p) -> None:
                        mod = m.get_submodule(name)
                        set_mask(mod, "weight", mask_from_keep(keep, p, mod.weight.shape, cfg.tile_rows,
                                                               cfg.tile_cols, name), where=name)  # fmt: skip

                    self.structures.append(_Structure(f"{r.name}:{p.value}", rows, prune))
        if not self.structures:
            raise ConfigError(f"regularize: no {', '.join(p.value for p in cfg.patterns)} group found in the "
                              f"selected layers (all pinned or skipped)")  # fmt: skip

    def penalty(self, rows: Tensor) -> Tensor:
        k = self.cfg.kind
        if k == RegKind.GROUP_LASSO:
            return group_lasso(rows)
        if k == RegKind.GROUP_HS:
            return group_hs(rows)
        if k == RegKind.HOYER_SQUARE:
            return hoyer_square(rows)
        return l1(rows)

    def __call__(self, model: nn.Module) -> Tensor:
        return torch.stack([self.penalty(s.rows(model)) for s in self.structures]).sum()

    @torch.no_grad()
    def to_masks_(self, model: nn.Module, threshold: float) -> dict[str, int]:
        """Prune every group whose norm is ``<= threshold · max`` norm of its structure; returns the
        number of groups pruned per structure. Coupled units pruned by any structure are masked whole."""
        check_range("threshold", threshold, 0.0, 1.0)
        out = {}
        for s in self.structures:
            n = group_norms(s.rows(model).detach().double())
            keep = n > threshold * float(n.max()) if float(n.max()) > 0 else torch.zeros_like(n, dtype=torch.bool)
            if bool(keep.sum() == 0):
                keep[int(n.argmax())] = True  # never prune a whole structure away
            s.prune(model, keep)
            out[s.name] = int((~keep).sum())
        return out


class RegularizerCallback(Callback):
    """Adds ``strength · ∇R`` to the gradients after every backward pass (:func:`cimkit.train.fit`)."""

    def __init__(self, reg: Regularizer) -> None:
        self.reg = reg
        self.last = 0.0

    def after_backward(self, model: nn.Module, step: int) -> None:
        lam = self.reg.cfg.strength
        if lam == 0:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad():
            r = self.reg(model)
            grads = torch.autograd.grad(r * lam, params, allow_unused=True)
        self.last = float(r.detach())
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g.detach())

    def on_epoch_end(self, model: nn.Module, epoch: int, record: dict[str, float]) -> None:
        record["regularizer"] = self.last
