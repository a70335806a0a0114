"""Structured sparsity: masks that stack with quantization and crossbars, SSL / DeepHoyer
regularizers, pruning schedules, and physical removal of pruned channels.

::

    from cimkit import sparse
    sparse.sparsify_(model, sparse.SparsityConfig(pattern="filter", sparsity=0.5), example_input=x)
    small = sparse.remove(model, x)      # smaller dense plain-PyTorch layers, same outputs

See docs/sparsity.md for the methods, formulas and citations.
"""

from cimkit.sparse.config import Criterion, Pattern, Scope, SparsityConfig
from cimkit.sparse.deps import Branch, DepGraph, Dimension, analyze
from cimkit.sparse.masks import WeightMask, bake_, get_mask, layer_masks, set_mask, unsparsify_
from cimkit.sparse.patterns import group_view, mask_from_keep, nm_mask, occupancy, tile_column_mask
from cimkit.sparse.sparsify import sparsify, sparsify_

__all__ = [
    "Branch", "Criterion", "DepGraph", "Dimension", "Pattern", "Scope", "SparsityConfig", "WeightMask", "analyze",
    "bake_", "get_mask", "group_view", "layer_masks", "mask_from_keep", "nm_mask", "occupancy", "set_mask",
    "sparsify", "sparsify_", "tile_column_mask", "unsparsify_",
]  # fmt: skip
