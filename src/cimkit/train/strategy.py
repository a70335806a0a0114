"""Training strategies: how ``fit`` and the experiment runner spread work over processes.

:class:`Strategy` is the protocol the training loop and the runner call, and the single-process
implementation of it (every method an identity or a no-op): ``wrap`` the model, ``shard`` the
loader, ``seed`` per rank, ``all_reduce_sum`` metrics, write files only when ``is_main``,
``barrier``, ``map`` a sweep over ranks. :mod:`cimkit.dist` adds ``DDPStrategy``
(``torch.distributed``). Items of a sweep carry their own seeds, so a gathered result does not
depend on which rank computed it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cimkit.data.loader import TensorLoader
from cimkit.errors import ConfigError
from cimkit.utils import derive_seed

__all__ = ["SingleProcess", "Strategy", "gather_items", "split_items"]

T = TypeVar("T")
R = TypeVar("R")


def _check_rank(rank: int, world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size: {world_size!r} is out of range; allowed: integers >= 1")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank: {rank!r} is out of range; allowed: integers in [0, {world_size - 1}]")


def split_items(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Round-robin share of ``items`` for ``rank``: ``items[rank::world_size]`` (balanced to within one)."""
    _check_rank(rank, world_size)
    return list(items[rank::world_size])


def gather_items(parts: Sequence[Sequence[Any]], n: int) -> list[Any]:
    """Undo :func:`split_items`: ``parts[r]`` holds the results of items ``r, r + W, ...``; returns all ``n`` in order."""
    w = len(parts)
    if sum(len(p) for p in parts) != n:
        raise ValueError(f"gather_items: got {sum(len(p) for p in parts)} results for {n} items")
    return [parts[i % w][i // w] for i in range(n)]


class Strategy:
    """What a training loop calls; this base is one process (every method a no-op or identity)."""

    name = "single"

    def __init__(self, device: str | torch.device | None = None) -> None:
        self._device = torch.device(device) if device is not None else None
        self.comm_state: Any = None  # the gradient hook's state (cimkit.dist), if any

    # -- identity
    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, results and reports."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        return self._device or torch.device("cpu")

    # -- life cycle
    def setup(self) -> Strategy:
        return self

    def teardown(self) -> None:
        return None

    def __enter__(self) -> Strategy:
        return self.setup()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.teardown()

    # -- model and data
    def wrap(self, model: nn.Module) -> nn.Module:
        """The model to train (moved to :attr:`device`)."""
        return model.to(self.device)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain module inside ``wrap``'s result (save and evaluate this one)."""
        return model.module if isinstance(model, DistributedDataParallel) else model

    def shard(self, loader: TensorLoader) -> Any:
        """This rank's share of every global batch of ``loader`` (one process: the loader itself)."""
        return loader

    def seed(self, seed: int) -> int:
        """This rank's seed for its own randomness (dropout, augmentation); ``seed`` itself on rank 0 of 1."""
        return int(seed) if self.world_size == 1 else derive_seed(int(seed), "rank", self.rank)

    # -- collectives
    def barrier(self) -> None:
        return None

    def all_gather_object(self, obj: T) -> list[T]:
        return [obj]

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        return obj

    def sync_module(self, model: nn.Module) -> nn.Module:
        """Make every rank's ``model`` state (parameters and buffers, e.g. BatchNorm statistics that
        each rank updated from its own batches) equal to rank 0's; returns ``model``."""
        return model

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Sums over ranks (float64), e.g. of per-rank loss sums and sample counts."""
        return [float(v) for v in values]

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]`` with the items split round-robin over ranks; every rank gets all results.

        Items must carry their own seeds (e.g. a chip index → ``derive_seed``) so that a result does
        not depend on which rank computed it: then the gathered list equals the single-process one.
        """
        mine = [fn(x) for x in split_items(items, self.rank, self.world_size)]
        return gather_items(self.all_gather_object(mine), len(items))

    def comm_stats(self) -> dict[str, Any]:
        """Bytes sent per step by the gradient hook (empty in one process)."""
        return self.comm_state.stats.summary() if self.comm_state is not None else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size}, device={self.device})"


class SingleProcess(Strategy):
    """One process, no communication: exactly the training loop as it was."""


