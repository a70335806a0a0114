"""Prune to a MAC budget: the sparsity at which the removed model keeps a given fraction of MACs.

MACs after physical removal fall (weakly) monotonically with the fraction of coupled units pruned,
so the sparsity is found by bisection: each probe prunes a copy, removes its dead units and counts
the MACs (:func:`cimkit.quant.account`). This is how "2x fewer MACs" targets are met (Torch-Pruning
does the same with its ``pruning_ratio`` search).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from cimkit.config import check_range
from cimkit.errors import ConfigError
from cimkit.nn.walk import FilterFn
from cimkit.quant.accounting import account
from cimkit.sparse.config import SparsityConfig
from cimkit.sparse.deps import DepGraph, analyze
from cimkit.sparse.removal import remove_
from cimkit.sparse.sparsify import sparsify_

__all__ = ["macs_after", "sparsity_for_macs"]


def macs_after(model: nn.Module, cfg: SparsityConfig, example_input: Any, graph: DepGraph | None = None,
               filter_fn: FilterFn | None = None) -> int:  # fmt: skip
    """MACs per sample of a copy of ``model`` pruned by ``cfg`` and physically shrunk."""
    m = copy.deepcopy(model)
    sparsify_(m, cfg, filter_fn, example_input=example_input, graph=graph)
    remove_(m, example_input, graph=graph)
    return int(account(m, example_input).total["macs"])


def sparsity_for_macs(model: nn.Module, cfg: SparsityConfig, example_input: Any, keep_macs: float, *,
                      filter_fn: FilterFn | None = None, iters: int = 14) -> tuple[float, float]:  # fmt: skip
    """``(sparsity, macs ratio)``: the smallest sparsity of ``cfg``'s coupled pattern whose removed
    model has at most ``keep_macs`` of ``model``'s MACs (or the closest reachable)."""
    check_range("keep_macs", keep_macs, 0.0, 1.0, lo_open=True)
    if not cfg.is_coupled():
        raise ConfigError("target_macs: needs a coupled pattern (filter/channel with coupled = true, head, depth); "
                          "per-layer masks do not change the MACs until channels are removed")  # fmt: skip
    graph = analyze(model, example_input)
    base = int(account(model, example_input).total["macs"])
    lo, hi = 0.0, 0.99
    r_hi = macs_after(model, cfg.replace(sparsity=hi), example_input, graph, filter_fn) / base
    if r_hi > keep_macs:
        return hi, r_hi
    best = (hi, r_hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        r = macs_after(model, cfg.replace(sparsity=mid), example_input, graph, filter_fn) / base
        if r <= keep_macs:
            hi, best = mid, (mid, r)
        else:
            lo = mid
    return best
