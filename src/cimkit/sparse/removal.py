"""Physical removal: pruned channels and heads become smaller dense layers.

``remove_(model, example_input)`` traces the model (:func:`cimkit.sparse.deps.analyze`), finds
every *dead* unit of every prunable dimension and slices it out of all its member tensors — the
producers' filter rows and biases, the BatchNorm channels (scale, shift and running statistics), the
consumers' input columns, embedding columns — and updates the layers' sizes (``out_channels``,
``in_features``, ``num_features``, ...) and, for attention heads, the owning module's head count
(``n_head`` and the like, :data:`cimkit.sparse.deps.HEAD_ATTRS`) and the width of all its heads
where it keeps one (:data:`cimkit.sparse.deps.HEAD_WIDTH_ATTRS`, e.g. GPT-2's ``split_size``). The
model keeps its classes and forward code: it is a plain PyTorch model that saves (``state_dict``),
quantizes and maps like any other. Layers stored in another layout (GPT-2's ``Conv1D``) are first
swapped for the standard layer they compute (:func:`cimkit.nn.standardize_`); ``cimkit.undo_``
swaps them back, shrunken, with their size attributes updated.

A unit is dead, so removing it changes no output, when either

* every consumer column it feeds is exactly zero (the channel is not used), or
* every producer row and bias of it is exactly zero and every BatchNorm on it has zero scale and
  shift (the channel is exactly zero wherever it is used).

Pinned dimensions (:mod:`cimkit.sparse.deps`) are never touched; every dimension keeps at least one
unit (an all-pruned dimension keeps one exactly-zero unit, e.g. a depth-pruned residual branch keeps
a one-channel stub). The masks are baked in first (the zeros stay); ``keep_masks=True`` re-applies
the masks of the remaining weights (e.g. an unstructured mask inside kept channels) so that
fine-tuning keeps them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.errors import ConfigError
from cimkit.nn.adapters import standardize_
from cimkit.nn.transform import holds_transform
from cimkit.nn.walk import FilterFn, select
from cimkit.sparse.config import Pattern, SparsityConfig
from cimkit.sparse.coupled import choose_units
from cimkit.sparse.deps import HEAD_WIDTH_ATTRS, DepGraph, Dimension, Member, analyze
from cimkit.sparse.masks import bake_, layer_masks, set_mask

__all__ = ["RemovalResult", "dead_units", "remove", "remove_", "shrink_"]


@dataclass
class RemovalResult:
    """What :func:`remove_` did: per dimension ``(name, kind, units before, units after)``."""

    dims: list[tuple[str, str, int, int]] = field(default_factory=list)
    heads: dict[str, int] = field(default_factory=dict)  # owner module -> heads kept

    @property
    def removed(self) -> int:
        return sum(b - a for _, _, b, a in self.dims)

    def to_dict(self) -> dict[str, Any]:
        return {"dims": [{"name": n, "kind": k, "before": b, "after": a} for n, k, b, a in self.dims],
                "heads": dict(self.heads), "removed_units": self.removed}  # fmt: skip


def _zero_positions(t: Tensor, dim: int) -> list[bool]:
    """Which slices of ``t`` along ``dim`` are exactly zero."""
    return (t.detach() == 0).movedim(dim, 0).reshape(t.shape[dim], -1).all(1).tolist()


def dead_units(model: nn.Module, dim: Dimension, mods: dict[str, nn.Module] | None = None) -> list[int]:
    """Indices of ``dim``'s units whose removal changes no output (see the module docstring)."""
    mods = mods if mods is not None else dict(model.named_modules())
    zero: dict[Member, list[bool]] = {}

    def all_zero(m: Member, p: tuple[int, ...]) -> bool:
        z = zero.get(m)
        if z is None:
            z = zero[m] = _zero_positions(getattr(mods[m.module], m.param), m.dim)
        return all(z[i] for i in p)

    out = []
    for i, u in enumerate(dim.units):
        if all(all_zero(m, p) for m, p in u.positions.items() if m.role == "in"):  # not used anywhere
            out.append(i)
            continue
        dead = True
        for m, p in u.positions.items():
            mod = mods[m.module]
            if (m.role == "out" or (m.role == "norm" and m.param in ("weight", "bias"))
                    or (m.role == "norm" and m.param == "running_mean" and getattr(mod, "weight", None) is None)):
                dead = all_zero(m, p)  # a BatchNorm without affine shifts by -mean / std
            if not dead:
                break
        if dead:
            out.append(i)
    return out


def _check_plain(mods: dict[str, nn.Module]) -> None:
    for name, mod in mods.items():
        if holds_transform(mod):
            raise ConfigError(f"remove: layer '{name}' is transformed ({type(mod).__name__}); remove pruned channels "
                              f"before quantizing or mapping onto crossbars (or cimkit.undo_ first)")  # fmt: skip


def _set_tensor(mod: nn.Module, name: str, new: Tensor) -> None:
    if name in mod._parameters:
        old = mod._parameters[name]
        mod._parameters[name] = nn.Parameter(new, requires_grad=old.requires_grad if old is not None else True)
    else:
        mod._buffers[name] = new


def _fix_sizes(mod: nn.Module) -> None:
    w = getattr(mod, "weight", None)
    if isinstance(mod, nn.modules.conv._ConvNd) and isinstance(w, Tensor):
        mod.out_channels, mod.in_channels = int(w.shape[0]), int(w.shape[1]) * mod.groups
    elif isinstance(mod, nn.Linear) and isinstance(w, Tensor):
        mod.out_features, mod.in_features = int(w.shape[0]), int(w.shape[1])
    elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
        ref = mod.running_mean if mod.running_mean is not None else w
        mod.num_features = int(ref.shape[0])
    elif isinstance(mod, nn.Embedding) and isinstance(w, Tensor):
        mod.embedding_dim = int(w.shape[1])


@torch.no_grad()
def remove_(model: nn.Module, example_input: Any, *, keep_masks: bool = False, graph: DepGraph | None = None,
            units: Sequence[tuple[Dimension, Sequence[int]]] | None = None) -> RemovalResult:  # fmt: skip
    """Remove every dead unit of ``model`` in place (see the module docstring); returns what it did.

    ``example_input``: one input batch (a tensor, a tuple of inputs or a dict) to trace the model
    with; ``graph``: a dependency graph of this model made already (then no trace is needed).
    ``units``: remove exactly these ``(dimension, unit indices)`` of ``graph`` instead of the dead
    ones (pruning straight to a smaller model, :func:`shrink_`; this changes the outputs)."""
    if graph is None:
        model = standardize_(model)  # e.g. GPT-2's Conv1D as the nn.Linear it computes (undone by undo_)
    mods = dict(model.named_modules())
    _check_plain(mods)
    g = graph if graph is not None else analyze(model, example_input)
    res = RemovalResult()
    drop: dict[tuple[str, str, int], set[int]] = {}  # (module, tensor, dim) -> positions to remove
    heads: dict[str, tuple[str, int]] = {}
    todo = [(d, None) for d in g.prunable()] if units is None else [(d, list(u)) for d, u in units]
    for d, chosen in todo:
        dead = dead_units(model, d, mods) if chosen is None else sorted(set(chosen))
        if len(dead) == d.size:
            dead = dead[1:]  # keep one (exactly zero or unused) unit
        res.dims.append((d.name, d.kind, d.size, d.size - len(dead)))
        for i in dead:
            for m, p in d.units[i].positions.items():
                s = drop.get((m.module, m.param, m.dim))
                if s is None:
                    s = drop[(m.module, m.param, m.dim)] = set()
                s.update(p)
        if d.kind == "head" and d.head_owner is not None and d.head_attr is not None and dead:
            heads[d.head_owner] = (d.head_attr, d.size - len(dead))
    masks = {k: v.clone() for k, v in layer_masks(model).items()} if keep_masks else {}
    bake_(model)
    mods = dict(model.named_modules())
    kept_idx: dict[tuple[str, str], list[tuple[int, Tensor]]] = {}
    keeps: dict[tuple[int, frozenset[int]], Tensor] = {}  # a filter's weight, bias and BatchNorm share one
    for (mname, pname, dim), gone in drop.items():
        n = getattr(mods[mname], pname).shape[dim]
        k = (n, frozenset(gone))
        keep = keeps.get(k)
        if keep is None:  # a few dozen channels: plain Python beats tensor indexing
            keep = keeps[k] = torch.tensor([i for i in range(n) if i not in gone], dtype=torch.long)
        kept_idx.setdefault((mname, pname), []).append((dim, keep))
    for (mname, pname), cuts in kept_idx.items():
        mod = mods[mname]
        t = getattr(mod, pname)
        for d, keep in cuts:
            t = t.index_select(d, keep.to(t.device))
        _set_tensor(mod, pname, t.contiguous())
        key = f"{mname}.{pname}" if mname else pname
        if key in masks:
            mk = masks[key]
            for d, keep in cuts:
                mk = mk.index_select(d, keep.to(mk.device))
            masks[key] = mk
    for mname in dict.fromkeys(m for m, _ in kept_idx):  # each shrunken module once, in order
        _fix_sizes(mods[mname])
    for owner, (attr, n) in heads.items():
        mod = model.get_submodule(owner)
        old = int(getattr(mod, attr))
        for w in HEAD_WIDTH_ATTRS:  # the width of all heads together, where the module keeps one
            v = getattr(mod, w, None)
            if isinstance(v, int) and not isinstance(v, bool) and v % old == 0:
                setattr(mod, w, v // old * n)
        setattr(mod, attr, n)
        res.heads[owner] = n
    for key, mk in masks.items():
        if bool((mk == 0).any()):
            mname, _, pname = key.rpartition(".")
            set_mask(mods[mname] if mname else model, pname, mk, where=mname)
    return res


@torch.no_grad()
def shrink_(model: nn.Module, config: SparsityConfig, example_input: Any, filter_fn: FilterFn | None = None) -> RemovalResult:
    """Prune ``model`` by a coupled ``config`` (``filter``/``channel``/``head``) straight to smaller
    layers, in place, without masks: one trace, the units :func:`cimkit.sparse.sparsify_` would mask
    are cut out at once (what ``sparsify_`` + :func:`remove_` give, without the parametrizations)."""
    if not config.is_coupled() or config.pattern == Pattern.DEPTH:
        raise ConfigError(f"shrink_: pattern {config.pattern.value!r} is not a coupled channel/head pattern; use "
                          f"sparsify_ + remove_")  # fmt: skip
    model = standardize_(model)
    g = analyze(model, example_input)
    refs = select(model, skip=config.skip, filter_fn=filter_fn)
    return remove_(model, example_input, graph=g, units=choose_units(model, config, refs, g, filter_fn))


def remove(model: nn.Module, example_input: Any, *, keep_masks: bool = False) -> nn.Module:
    """:func:`remove_` on a deep copy of ``model``; returns the shrunken copy."""
    m = copy.deepcopy(model)
    remove_(m, example_input, keep_masks=keep_masks)
    return m
