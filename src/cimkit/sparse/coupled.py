"""Coupled patterns: prune whole channel groups, heads or residual branches found by the
dependency analysis (:mod:`cimkit.sparse.deps`), so that the pruned model can be shrunk exactly.

* ``filter`` (coupled): every prunable *channel* dimension; a unit (one coupled channel) is scored
  by the norm of all its weights — its producers' filter rows, its BatchNorm scales and its
  consumers' input columns (Torch-Pruning's group magnitude) — and, when pruned, masked in all of
  them: filter rows and biases, BatchNorm scale and shift (so the channel is exactly zero after the
  BatchNorm, in training and in eval mode) and the consumers' columns.
* ``channel`` (coupled): the same units, scored by their consumers' columns only.
* ``head``: attention-head dimensions (q/k/v rows of one head and its output-projection columns).
* ``depth``: residual branches, scored by the norm of all their weights; a pruned branch has every
  weight, bias and normalisation scale/shift masked, so ``x + f(x)`` becomes ``x``.

:func:`unit_matrix` gives the units of a dimension as rows of a ``(units, weights)`` matrix
(differentiable), which the group regularizers (:mod:`cimkit.sparse.regularizers`) penalise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.errors import ConfigError
from cimkit.nn.walk import FilterFn, LayerRef, select
from cimkit.sparse.config import Pattern, Scope, SparsityConfig
from cimkit.sparse.criteria import keep_global, keep_lowest_pruned
from cimkit.sparse.deps import Branch, DepGraph, Dimension, Member, analyze
from cimkit.sparse.masks import set_mask

__all__ = [
    "branch_vector", "choose_units", "coupled_dims", "mask_branch", "mask_units", "prune_coupled", "selectable",
    "unit_matrix",
]  # fmt: skip

_SCORED_PARAMS = ("weight",)  # biases, shifts and running statistics are masked, not scored


def _member_rows(mod: nn.Module, m: Member, dim: Dimension) -> Tensor:
    """``(units, k)`` values of member ``m`` of every unit of ``dim`` (k = positions x the other dims' size)."""
    t = getattr(mod, m.param)
    idx = dim.index(m)
    if idx is not None:  # (U, p): every unit has as many positions
        sel = t.index_select(m.dim, idx.reshape(-1).to(t.device)).movedim(m.dim, 0)  # (U*p, ...)
        return sel.reshape(dim.size, -1)
    rows = [t.index_select(m.dim, torch.tensor(u.positions[m], device=t.device)).movedim(m.dim, 0).reshape(-1)
            for u in dim.units]  # fmt: skip
    width = max(int(r.numel()) for r in rows)
    return torch.stack([nn.functional.pad(r, (0, width - r.numel())) for r in rows])  # zero padding


def unit_matrix(model: nn.Module, dim: Dimension, roles: Sequence[str] = ("out", "in", "norm"),
                mods: dict[str, nn.Module] | None = None) -> Tensor:  # fmt: skip
    """The units of ``dim`` as rows ``(units, S)``: their weights in the member tensors of ``roles``
    (``mods``: ``dict(model.named_modules())`` when the caller has it)."""
    mods = mods if mods is not None else dict(model.named_modules())
    members = [m for m in dim.members() if m.role in roles and m.param in _SCORED_PARAMS]
    if not members:
        raise ConfigError(f"dimension {dim.name}: no {'/'.join(roles)} weights to score")
    present = [m for m in members  # every unit has a slice there
               if dim.index(m) is not None or all(m in u.positions for u in dim.units)]
    parts = [_member_rows(mods[m.module], m, dim) for m in present]
    return torch.cat(parts, dim=1)


def branch_vector(model: nn.Module, branch: Branch) -> Tensor:
    """Every weight of a residual branch as one vector (its layers' and normalisations' weights)."""
    mods = dict(model.named_modules())
    return torch.cat([mods[n].weight.reshape(-1) for n in branch.layers + branch.norms])


def mask_units(model: nn.Module, dim: Dimension, pruned: Sequence[int],
               mods: dict[str, nn.Module] | None = None) -> None:  # fmt: skip
    """Mask the units ``pruned`` (indices into ``dim.units``) in every member tensor."""
    if not len(pruned):
        return
    mods = mods if mods is not None else dict(model.named_modules())
    by_member: dict[Member, list[int]] = {}
    for i in pruned:
        for m, p in dim.units[i].positions.items():
            if m.param in ("running_mean", "running_var"):
                continue
            by_member.setdefault(m, []).extend(p)
    for m, ps in by_member.items():
        mod = mods[m.module]
        t = getattr(mod, m.param)
        mask = torch.ones_like(t)
        mask.index_fill_(m.dim, torch.tensor(ps, dtype=torch.long, device=t.device), 0.0)
        set_mask(mod, m.param, mask, where=m.module)


def mask_branch(model: nn.Module, branch: Branch) -> None:
    """Mask every weight, bias and normalisation scale/shift of a residual branch."""
    mods = dict(model.named_modules())
    for n in branch.layers + branch.norms:
        mod = mods[n]
        for p in ("weight", "bias"):
            t = getattr(mod, p, None)
            if isinstance(t, Tensor):
                set_mask(mod, p, torch.zeros_like(t), where=n)


def selectable(model: nn.Module, refs: list[LayerRef], skip: Sequence[str] = (),
               filter_fn: FilterFn | None = None) -> dict[str, LayerRef]:  # fmt: skip
    """The selected layers (``refs``) plus the embeddings that ``skip`` / ``filter_fn`` leave in (an
    embedding's columns are a producer of coupled channels too)."""
    out = {r.name: r for r in refs}
    for r in select(model, nn.Embedding, skip=skip, filter_fn=filter_fn):
        out.setdefault(r.name, r)
    return out


def coupled_dims(graph: DepGraph, pattern: Pattern, selected: set[str]) -> list[Dimension]:
    """The prunable dimensions of ``pattern`` whose producing layers are all selected."""
    kind = "head" if pattern == Pattern.HEAD else "channel"
    return [d for d in graph.prunable(kind) if all(p in selected for p in d.producers)]


def _scores(model: nn.Module, dim: Dimension, pattern: Pattern, cfg: SparsityConfig,
            mods: dict[str, nn.Module]) -> Tensor:  # fmt: skip
    roles = ("in",) if pattern == Pattern.CHANNEL else ("out", "in", "norm")
    rows = unit_matrix(model, dim, roles, mods).detach()
    if cfg.criterion.value == "l1":
        return rows.abs().sum(1)
    return rows.pow(2).sum(1).sqrt()


@torch.no_grad()
def choose_units(model: nn.Module, cfg: SparsityConfig, refs: list[LayerRef], graph: DepGraph,
                 filter_fn: FilterFn | None = None) -> list[tuple[Dimension, list[int]]]:  # fmt: skip
    """The coupled units ``cfg`` prunes (``filter``/``channel``/``head``): ``(dimension, unit indices)``."""
    by_name = selectable(model, refs, cfg.skip, filter_fn)
    dims = coupled_dims(graph, cfg.pattern, set(by_name))
    if not dims:
        raise ConfigError(f"sparsify: pattern '{cfg.pattern.value}' found no prunable coupled "
                          f"{'head' if cfg.pattern == Pattern.HEAD else 'channel'} group among the selected layers "
                          f"(pinned: {[d.name for d in graph.dims if d.pinned][:4]})")  # fmt: skip
    rules = cfg.rules()
    mods = dict(model.named_modules())
    out: list[tuple[Dimension, list[int]]] = []
    pooled: list[tuple[Dimension, Tensor]] = []
    for d in dims:
        fields = rules.fields_for(by_name[d.producers[0]])
        sparsity = float(fields.get("sparsity", cfg.sparsity))
        s = _scores(model, d, cfg.pattern, cfg, mods)
        if cfg.scope == Scope.GLOBAL and "sparsity" not in fields:
            pooled.append((d, s))
            continue
        out.append((d, torch.nonzero(~keep_lowest_pruned(s, sparsity, cfg.keep_min)).flatten().tolist()))
    if pooled:
        for (d, _), keep in zip(pooled, keep_global([s for _, s in pooled], cfg.sparsity, cfg.keep_min)):
            out.append((d, torch.nonzero(~keep).flatten().tolist()))
    return out


@torch.no_grad()
def prune_coupled(model: nn.Module, cfg: SparsityConfig, refs: list[LayerRef], *, example_input: Any = None,
                  graph: DepGraph | None = None, filter_fn: FilterFn | None = None) -> DepGraph:  # fmt: skip
    """Prune coupled units (``filter``/``channel``/``head``) or branches (``depth``) by ``cfg``; returns
    the dependency graph used."""
    g = graph if graph is not None else analyze(model, example_input)
    if cfg.pattern == Pattern.DEPTH:
        selected = set(selectable(model, refs, cfg.skip, filter_fn))
        branches = [b for b in g.branches if all(n in selected for n in b.layers)]
        if not branches:
            raise ConfigError("sparsify: pattern 'depth' found no residual branch among the selected layers")
        scores = torch.stack([branch_vector(model, b).detach().norm(p=1 if cfg.criterion.value == "l1" else 2)
                              for b in branches])  # fmt: skip
        keep = keep_lowest_pruned(scores, cfg.sparsity, cfg.keep_min)
        for b, k in zip(branches, keep.tolist()):
            if not k:
                mask_branch(model, b)
        return g
    mods = dict(model.named_modules())
    for d, pruned in choose_units(model, cfg, refs, g, filter_fn):
        mask_units(model, d, pruned, mods)
    return g
