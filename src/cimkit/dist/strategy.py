"""Training strategies: :class:`SingleProcess` (one process, as before) and :class:`DDPStrategy`.

A training loop written against :class:`Strategy` runs unchanged in one process or in ``W`` DDP
processes::

    strategy.setup()
    model = strategy.wrap(model)                 # DDP + the configured gradient-compression hook
    loader = strategy.shard(train_loader)        # this rank's slice of every global batch
    torch.manual_seed(strategy.seed(cfg.seed))   # per-rank stream for dropout/augmentation
    ...                                          # forward / backward / step as usual
    loss_sum, correct, n = strategy.all_reduce_sum([loss_sum, correct, n])
    if strategy.is_main: save(strategy.unwrap(model), ...)
    strategy.barrier()
    strategy.teardown()

**Failure policy** (no hung processes). A rank that raises exits; its sockets close and the gloo
peers blocked in a collective raise at once (connection closed by peer). A rank that stalls
without exiting makes its peers' collectives fail after ``timeout_s`` (the process group timeout;
with NCCL PyTorch's watchdog then aborts the process). ``barrier`` on gloo is a
``monitored_barrier`` whose error names the ranks that did not arrive. On top of that the
launchers end the whole job on the first failure: torchrun's agent stops the remaining workers and
exits non-zero; :func:`cimkit.dist.launch.spawn` terminates them and raises
:class:`~cimkit.dist.errors.DistributedError` naming the rank and its message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cimkit.config import check_range
from cimkit.data.loader import TensorLoader
from cimkit.train.compression import CompressionConfig
from cimkit.dist.register import register_compression
from cimkit.dist.shard import ShardedLoader
from cimkit.errors import ConfigError
from cimkit.train.strategy import SingleProcess, Strategy

__all__ = ["DDPStrategy", "SingleProcess", "Strategy", "strategy_from_env", "torchrun_env"]

T = TypeVar("T")
R = TypeVar("R")

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env() -> bool:
    """Whether this process was started by torchrun (or another launcher setting RANK/WORLD_SIZE/MASTER_*)."""
    return all(k in os.environ for k in _ENV)


class DDPStrategy(Strategy):
    """``torch.distributed`` data parallelism: one process per rank, gradients averaged by DDP.

    Rendezvous: inside torchrun (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set)
    ``env://``; otherwise pass ``init_method`` (e.g. ``file:///tmp/store`` for a FileStore, as the
    tests do) with ``rank`` and ``world_size``. If a process group exists already it is used as is.
    ``backend`` defaults to ``nccl`` for CUDA devices and ``gloo`` on CPU; ``device`` defaults to
    ``cuda:LOCAL_RANK`` when CUDA is available, else CPU. ``timeout_s`` bounds every collective
    (see the failure policy in the module docstring). ``compression`` picks the gradient hook
    (:func:`~cimkit.dist.register.register_compression`); its byte counters are :meth:`comm_stats`.
    """

    name = "ddp"

    def __init__(
        self,
        compression: CompressionConfig | None = None,
        *,
        backend: str | None = None,
        init_method: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        local_rank: int | None = None,
        timeout_s: float = 300.0,
        device: str | torch.device | None = None,
        find_unused_parameters: bool = False,
        bucket_cap_mb: float | None = None,
    ) -> None:
        super().__init__(device)
        check_range("timeout_s", timeout_s, 0.0, lo_open=True)
        if bucket_cap_mb is not None:
            check_range("bucket_cap_mb", bucket_cap_mb, 0.0, lo_open=True)
        self.compression = compression or CompressionConfig()
        self.backend = backend
        self.init_method = init_method
        self._rank, self._world, self._local = rank, world_size, local_rank
        self.timeout_s = float(timeout_s)
        self.find_unused_parameters = find_unused_parameters
        self.bucket_cap_mb = bucket_cap_mb
        self._owns_group = False
        self._ready = False

    @property
    def rank(self) -> int:
        return dist.get_rank() if self._ready else int(self._rank or 0)

    @property
    def world_size(self) -> int:
        return dist.get_world_size() if self._ready else int(self._world or 1)

    @property
    def local_rank(self) -> int:
        return int(self._local if self._local is not None else self.rank)

    def setup(self) -> DDPStrategy:
        """Join (or adopt) the process group and pick the device; idempotent."""
        if self._ready:
            return self
        env = os.environ
        if not dist.is_available():
            raise ConfigError("DDPStrategy: this PyTorch build has no torch.distributed")
        if not dist.is_initialized():
            if self.init_method is None and not torchrun_env():
                raise ConfigError(
                    "DDPStrategy: no rendezvous; run under torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR, "
                    "MASTER_PORT) or pass init_method='file:///path/store' with rank and world_size"
                )
            rank = self._rank if self._rank is not None else int(env.get("RANK", "0"))
            world = self._world if self._world is not None else int(env.get("WORLD_SIZE", "1"))
            if self._local is None:
                self._local = int(env.get("LOCAL_RANK", rank))
            self._pick_device()
            backend = self.backend or ("nccl" if self.device.type == "cuda" else "gloo")
            dist.init_process_group(
                backend,
                init_method=self.init_method or "env://",
                rank=rank,
                world_size=world,
                timeout=timedelta(seconds=self.timeout_s),
                device_id=self.device if self.device.type == "cuda" else None,
            )
            self._owns_group = True
        else:
            if self._local is None:
                self._local = int(env.get("LOCAL_RANK", dist.get_rank()))
            self._pick_device()
        self._ready = True
        return self

    def _pick_device(self) -> None:
        if self._device is None:
            cuda = torch.cuda.is_available() and (self.backend in (None, "nccl"))
            self._device = torch.device(f"cuda:{self.local_rank}") if cuda else torch.device("cpu")
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)

    def _need_ready(self, what: str) -> None:
        if not self._ready:
            raise RuntimeError(f"DDPStrategy.{what}: call setup() first")

    def teardown(self) -> None:
        if self._ready and self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._ready = self._owns_group = False

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` (parameters broadcast from rank 0) with the compression hook."""
        self._need_ready("wrap")
        model = model.to(self.device)
        kw: dict[str, Any] = {"find_unused_parameters": self.find_unused_parameters}
        if self.bucket_cap_mb is not None:
            kw["bucket_cap_mb"] = self.bucket_cap_mb
        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids, **kw)
        self.comm_state = register_compression(ddp, self.compression)
        return ddp

    def shard(self, loader: TensorLoader) -> ShardedLoader:
        return ShardedLoader(loader, self.rank, self.world_size)

    def barrier(self) -> None:
        self._need_ready("barrier")
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=self.timeout_s), wait_all_ranks=True)
        elif self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def all_gather_object(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (pickled between the job's own ranks by ``torch.distributed``)."""
        self._need_ready("all_gather_object")
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        self._need_ready("broadcast_object")
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def sync_module(self, model: nn.Module) -> nn.Module:
        self._need_ready("sync_module")
        with torch.no_grad():
            for t in self.unwrap(model).state_dict().values():
                if t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool, torch.uint8):
                    dist.broadcast(t, src=0)
        return model

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        self._need_ready("all_reduce_sum")
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)  # (n,)
        dist.all_reduce(t)
        return t.tolist()


def strategy_from_env(compression: CompressionConfig | None = None, **kw: Any) -> Strategy:
    """:class:`DDPStrategy` when started by torchrun with ``WORLD_SIZE > 1`` (or a group exists), else :class:`SingleProcess`."""
    if (dist.is_available() and dist.is_initialized()) or (torchrun_env() and int(os.environ["WORLD_SIZE"]) > 1):
        return DDPStrategy(compression, **kw)
    return SingleProcess(kw.get("device"))
