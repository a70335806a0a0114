"""Structured sparsity: masks that stack with quantization and crossbars, SSL / DeepHoyer
regularizers, pruning schedules, and physical removal of pruned channels.

::

    from cimkit import sparse
    sparse.sparsify_(model, sparse.SparsityConfig(pattern="filter", sparsity=0.5), example_input=x)
    small = sparse.remove(model, x)      # smaller dense plain-PyTorch layers, same outputs

See docs/sparsity.md for the methods, formulas and citations.
"""

from cimkit.sparse.budget import sparsity_for_macs
from cimkit.sparse.config import Criterion, Pattern, Scope, SparsityConfig
from cimkit.sparse.deps import Branch, DepGraph, Dimension, analyze
from cimkit.sparse.masks import WeightMask, bake_, get_mask, layer_masks, set_mask, unsparsify_
from cimkit.sparse.patterns import group_view, mask_from_keep, nm_mask, occupancy, tile_column_mask
from cimkit.sparse.regularizers import Regularizer, RegularizerCallback, RegularizerConfig
from cimkit.sparse.removal import RemovalResult, remove, remove_, shrink_
from cimkit.sparse.report import model_record, required_adc_bits
from cimkit.sparse.sparsify import sparsify, sparsify_

__all__ = [
    "Branch", "Criterion", "DepGraph", "Dimension", "Pattern", "Regularizer", "RegularizerCallback",
    "RegularizerConfig", "RemovalResult", "Scope", "SparsityConfig", "WeightMask", "analyze", "bake_", "get_mask",
    "group_view", "layer_masks", "mask_from_keep", "model_record", "nm_mask", "occupancy", "remove", "remove_",
    "required_adc_bits", "set_mask", "shrink_", "sparsify", "sparsify_", "sparsity_for_macs", "tile_column_mask",
    "unsparsify_",
]  # fmt: skip
