"""Which groups to prune: the lowest-scoring fraction, per layer or in one global ranking.

Scores are group magnitudes (:func:`cimkit.sparse.patterns.group_scores`; for coupled groups the
norm over all their weights, as Torch-Pruning's group magnitude importance). ``layer`` scope prunes
``floor(sparsity · G)`` groups of each layer / coupled dimension; ``global`` scope ranks every group
by its score over the mean score of its own layer (Torch-Pruning's ``normalizer="mean"``, which
makes layers of different weight scales comparable) and prunes the lowest ``floor(sparsity · ΣG)``.
Both keep at least ``keep_min`` groups of each layer. Ties break by position (stable sort), so the
choice is deterministic. Groups that are already all zero score 0 and are pruned first, which keeps
repeated pruning (iterative, gradual) monotone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["keep_global", "keep_lowest_pruned"]


def keep_lowest_pruned(scores: Tensor, sparsity: float, keep_min: int = 1) -> Tensor:
    """``(G,)`` bool keep vector: the ``floor(sparsity · G)`` lowest scores pruned (``keep_min`` kept)."""
    g = int(scores.numel())
    n_prune = min(math.floor(sparsity * g + 1e-9), max(g - keep_min, 0))
    keep = torch.ones(g, dtype=torch.bool, device=scores.device)
    if n_prune > 0:
        order = torch.argsort(scores.reshape(-1), stable=True)
        keep[order[:n_prune]] = False
    return keep


def keep_global(scores: Sequence[Tensor], sparsity: float, keep_min: int = 1) -> list[Tensor]:
    """Keep vectors for several layers' scores from one ranking of ``score / mean(layer's scores)``."""
    if not scores:
        return []
    normed = []
    for s in scores:
        s = s.reshape(-1).double()
        mean = s.mean()
        normed.append(s / mean if float(mean) > 0 else s)
    sizes = [int(s.numel()) for s in normed]
    allv = torch.cat(normed)
    total = int(allv.numel())
    n_prune = math.floor(sparsity * total + 1e-9)
    pruned = torch.zeros(total, dtype=torch.bool)
    if n_prune > 0:
        pruned[torch.argsort(allv, stable=True)[:n_prune]] = True
    out = []
    for part, s, g in zip(pruned.split(sizes), normed, sizes):
        keep = ~part
        short = min(keep_min, g) - int(keep.sum())
        if short > 0:  # give back the best pruned groups of a layer pruned below keep_min
            cand = torch.argsort(torch.where(keep, torch.full_like(s, -math.inf), s), descending=True, stable=True)
            keep[cand[:short]] = True
        out.append(keep.to(scores[0].device))
    return out
