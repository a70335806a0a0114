"""The ``sparsify`` transform: ``sparsify_(model, SparsityConfig(...))`` = ``cimkit.apply_(model, cfg)``.

Per-layer patterns (unstructured, N:M, filter/channel with ``coupled = false``, shape, block,
tile_column) score each selected layer's groups (:mod:`cimkit.sparse.patterns`), choose the ones to
prune (:mod:`cimkit.sparse.criteria`) and mask them (:mod:`cimkit.sparse.masks`); a pruned filter
also loses its bias. Coupled patterns go through the dependency analysis
(:mod:`cimkit.sparse.coupled`). ``cimkit.undo_`` / :func:`cimkit.sparse.unsparsify_` remove the masks.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from cimkit.errors import ConfigError
from cimkit.nn.adapters import standardize_
from cimkit.nn.transform import register_transform
from cimkit.nn.walk import FilterFn, LayerRef, select
from cimkit.sparse.config import Pattern, Scope, SparsityConfig
from cimkit.sparse.coupled import prune_coupled
from cimkit.sparse.criteria import keep_global, keep_lowest_pruned
from cimkit.sparse.masks import set_mask
from cimkit.sparse.patterns import group_scores, group_view, mask_from_keep, nm_mask, tile_column_mask

__all__ = ["sparsify", "sparsify_"]



def _layer_mask(w: Tensor, lc: SparsityConfig, name: str) -> Tensor:
    p = lc.pattern
    if p == Pattern.NM:
        return nm_mask(w, lc.n, lc.m)
    if p == Pattern.TILE_COLUMN:
        return tile_column_mask(w, lc.sparsity, lc.tile_rows, lc.tile_cols, name)
    raise AssertionError(p)  # pragma: no cover


def _grouped(lc: SparsityConfig) -> bool:
    return lc.pattern not in (Pattern.NM, Pattern.TILE_COLUMN)


def _prune_layers(model: nn.Module, cfg: SparsityConfig, refs: list[LayerRef]) -> None:
    rules = cfg.rules()
    pooled: list[tuple[LayerRef, SparsityConfig, Tensor]] = []
    for ref in refs:
        fields = rules.fields_for(ref)
        lc = cfg.replace(**fields, overrides={}) if fields else cfg
        w = ref.module.weight.detach()
        if not _grouped(lc):
            set_mask(ref.module, "weight", _layer_mask(w, lc, ref.name), where=ref.name)
            continue
        scores = group_scores(group_view(w, lc.pattern, lc.tile_rows, lc.tile_cols, ref.name), lc.criterion)
        if cfg.scope == Scope.GLOBAL and "sparsity" not in fields:
            pooled.append((ref, lc, scores))
            continue
        _apply_keep(ref, lc, keep_lowest_pruned(scores, lc.sparsity, lc.keep_min))
    if pooled:
        keeps = keep_global([s for _, _, s in pooled], cfg.sparsity, cfg.keep_min)
        for (ref, lc, _), keep in zip(pooled, keeps):
            _apply_keep(ref, lc, keep)


def _apply_keep(ref: LayerRef, lc: SparsityConfig, keep: Tensor) -> None:
    mod = ref.module
    mask = mask_from_keep(keep, lc.pattern, mod.weight.shape, lc.tile_rows, lc.tile_cols, ref.name)
    set_mask(mod, "weight", mask, where=ref.name)
    if lc.pattern == Pattern.FILTER and getattr(mod, "bias", None) is not None:
        set_mask(mod, "bias", keep.to(mod.bias.dtype), where=ref.name)  # a pruned filter loses its bias too


def sparsify_(
    model: nn.Module,
    config: SparsityConfig | dict[str, Any],
    filter_fn: FilterFn | None = None,
    *,
    example_input: Any = None,
    graph: Any = None,
) -> nn.Module:
    """Prune ``model`` in place by ``config`` (masks; see the module docstring); returns ``model``.

    Per-layer patterns act on every layer of :func:`cimkit.nn.select` that matches no ``skip``
    pattern and passes ``filter_fn(name, module)``. Coupled patterns (``filter``/``channel`` with
    ``coupled``, ``head``, ``depth``) trace the model once on ``example_input`` (or use ``graph``,
    a :class:`cimkit.sparse.deps.DepGraph` of the same model) and mask whole coupled groups. Layers
    stored in another layout (GPT-2's ``Conv1D``) are first swapped for the standard layer they
    compute (:func:`cimkit.nn.standardize_`; ``cimkit.undo_`` swaps them back)."""
    cfg = config if isinstance(config, SparsityConfig) else SparsityConfig.from_dict(config)
    if graph is None:  # a graph was made of the standardized model already
        model = standardize_(model)  # e.g. GPT-2's Conv1D as the nn.Linear it computes (undone by undo_)
    refs = select(model, skip=cfg.skip, filter_fn=filter_fn)
    if cfg.is_coupled():
        prune_coupled(model, cfg, refs, example_input=example_input, graph=graph, filter_fn=filter_fn)
        return model
    if not refs:
        raise ConfigError("sparsify: no layer selected (check skip / filter_fn); nothing to prune")
    _prune_layers(model, cfg, refs)
    return model


def sparsify(model: nn.Module, config: SparsityConfig | dict[str, Any], filter_fn: FilterFn | None = None, *,
             example_input: Any = None) -> nn.Module:  # fmt: skip
    """:func:`sparsify_` on a deep copy of ``model``."""
    return sparsify_(copy.deepcopy(model), config, filter_fn, example_input=example_input)


@register_transform(SparsityConfig, "sparsify", "prune weights with masks that later transforms keep (SparsityConfig)")
def _sparsify_transform(model: nn.Module, config: SparsityConfig, filter_fn: FilterFn | None = None) -> nn.Module:
    return sparsify_(model, config, filter_fn)

