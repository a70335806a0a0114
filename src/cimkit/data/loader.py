"""Batching by tensor indexing: :class:`TensorLoader` and the :func:`subset` helper."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from cimkit.errors import ConfigError, DataError


class TensorLoader:
    """Iterate ``(xb, yb)`` mini-batches of in-memory tensors by indexing (no per-sample Dataset).

    With ``shuffle`` the order of a pass is ``torch.randperm(N)`` drawn from
    ``torch.Generator().manual_seed(seed + epoch)``, so it depends only on ``(seed, epoch)``: a
    training run resumed at epoch ``k`` (``set_epoch(k)``) sees exactly the batches an uninterrupted
    run saw. Each pass uses the current :attr:`epoch` and then advances it by one, so a plain
    ``for epoch in ...: for xb, yb in loader`` loop also reshuffles; call :meth:`set_epoch` to pick
    the epoch explicitly. Without ``shuffle`` batches are contiguous slices (views, no copy).

    ``len(loader)`` is the number of batches per pass (after ``drop_last`` and ``limit``).
    ``device`` moves each batch there as it is yielded.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        *,
        limit: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: {batch_size!r} is out of range; allowed: integers >= 1")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigError(f"limit: {limit!r} is out of range; allowed: None or integers >= 0")
        if len(x) != len(y):
            raise DataError(f"TensorLoader: x has {len(x)} samples but y has {len(y)}")
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.limit = limit
        self.device = torch.device(device) if device is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next pass (its shuffle order is that of ``seed + epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.x)
        batches = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return batches if self.limit is None else min(batches, self.limit)

    @property
    def num_samples(self) -> int:
        """Samples yielded per pass."""
        return min(len(self) * self.batch_size, len(self.x))

    def order(self, epoch: int | None = None) -> Tensor | None:
        """The sample permutation of ``epoch`` (default: the next pass), or None without shuffle."""
        if not self.shuffle:
            return None
        e = self.epoch if epoch is None else int(epoch)
        gen = torch.Generator().manual_seed(self.seed + e)
        return torch.randperm(len(self.x), generator=gen)  # (N,)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        perm = self.order()
        self.epoch += 1
        n, bs = len(self.x), self.batch_size
        for b in range(len(self)):
            lo, hi = b * bs, min((b + 1) * bs, n)
            if perm is None:
                xb, yb = self.x[lo:hi], self.y[lo:hi]  # (B, ...) views
            else:
                idx = perm[lo:hi]  # (B,)
                xb, yb = self.x[idx], self.y[idx]  # (B, ...) gathered copies
            if self.device is not None:
                xb = xb.to(self.device, non_blocking=True)
                yb = yb.to(self.device, non_blocking=True)
            yield xb, yb

    def __repr__(self) -> str:
        return (
            f"TensorLoader(n={len(self.x)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, limit={self.limit}, batches={len(self)})"
        )


def subset(x: Tensor, y: Tensor, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` samples drawn without replacement (seeded), kept in their original order.

    ``n >= len(x)`` returns all samples (as given).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n: {n!r} is out of range; allowed: integers >= 0")
    if len(x) != len(y):
        raise DataError(f"subset: x has {len(x)} samples but y has {len(y)}")
    if n >= len(x):
        return x, y
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(x), generator=gen)[:n].sort().values  # (n,)
    return x[idx], y[idx]
