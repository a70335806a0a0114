"""Splitting work across ranks: each rank's share of every global batch, and of a list of sweep items.

:class:`ShardedLoader` wraps a :class:`~cimkit.data.TensorLoader` with the *global* batch size
``B``: every rank draws the same permutation (the loader's ``seed + epoch``), cuts the same global
batches, and rank ``r`` of ``W`` takes the ``r``-th of ``W`` contiguous slices of each
(``torch.tensor_split``, sizes differing by at most one). The ranks' slices are disjoint and cover
the global batch, so W ranks training on ``B/W`` each, with DDP averaging their gradients, take the
same steps as one process with batch ``B`` whenever ``W`` divides every batch's size (``B % W == 0``
and ``N % B == 0`` or ``drop_last``); otherwise the rank means are weighted equally rather than by
sample count. A final batch with fewer than ``W`` samples would leave a rank without data, so it is
dropped on every rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import Tensor

from cimkit.data.loader import TensorLoader
from cimkit.errors import ConfigError
from cimkit.train.strategy import _check_rank, gather_items, split_items  # noqa: F401  (re-exported)

__all__ = ["ShardedLoader", "gather_items", "shard_indices", "split_items"]

T = TypeVar("T")


def shard_indices(indices: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous slice of ``indices`` (``tensor_split`` into ``world_size`` parts)."""
    _check_rank(rank, world_size)
    return indices.tensor_split(world_size)[rank]


class ShardedLoader:
    """Rank ``rank``'s share of each global batch of ``loader`` (see the module docstring).

    Behaves like the wrapped loader for a training loop: ``set_epoch``, ``len`` (global batches per
    pass), iteration yielding ``(xb, yb)`` of about ``batch_size / world_size`` samples; the shared
    epoch counter lives in the wrapped loader.
    """

    def __init__(self, loader: TensorLoader, rank: int, world_size: int) -> None:
        if not isinstance(loader, TensorLoader):
            raise ConfigError(
                f"shard: expected a cimkit TensorLoader (in-memory tensors, seeded permutation), got {type(loader).__name__}"
            )
        _check_rank(rank, world_size)
        self.loader, self.rank, self.world_size = loader, rank, world_size

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def _bounds(self) -> list[tuple[int, int]]:
        n, bs = len(self.loader.x), self.loader.batch_size
        out = [(b * bs, min((b + 1) * bs, n)) for b in range(len(self.loader))]
        return [(lo, hi) for lo, hi in out if hi - lo >= self.world_size]

    def __len__(self) -> int:
        return len(self._bounds())

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per pass."""
        w, r = self.world_size, self.rank
        return sum((hi - lo) // w + (1 if r < (hi - lo) % w else 0) for lo, hi in self._bounds())

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        ld = self.loader
        perm = ld.order()
        ld.set_epoch(ld.epoch + 1)  # as TensorLoader.__iter__ does
        for lo, hi in self._bounds():
            if perm is None:
                idx = torch.arange(lo, hi).tensor_split(self.world_size)[self.rank]  # (b,)
                xb, yb = ld.x[int(idx[0]):int(idx[-1]) + 1], ld.y[int(idx[0]):int(idx[-1]) + 1]  # contiguous views
            else:
                idx = perm[lo:hi].tensor_split(self.world_size)[self.rank]  # (b,)
                xb, yb = ld.x[idx], ld.y[idx]  # (b, ...) gathered copies
            if ld.device is not None:
                xb = xb.to(ld.device, non_blocking=True)
                yb = yb.to(ld.device, non_blocking=True)
            yield xb, yb

    def __repr__(self) -> str:
        return f"ShardedLoader(rank={self.rank}, world_size={self.world_size}, loader={self.loader!r})"
