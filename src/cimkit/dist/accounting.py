"""Communication accounting: the bytes each rank hands to collectives, per training step.

``payload`` bytes are ``numel · element_size`` of every tensor a comm hook passes to a collective
(what this rank contributes; measured on the tensors themselves). ``ring`` bytes model what the
rank actually puts on the wire under the bandwidth-optimal ring algorithms (Patarasuk & Yuan,
"Bandwidth optimal all-reduce algorithms for clusters of workstations", JPDC 2009):

* all-reduce of ``b`` bytes: ``2·(W−1)/W · b`` (reduce-scatter then all-gather),
* all-gather of ``b`` bytes per rank: ``(W−1) · b``.

So at ``W = 2`` both equal the payload, but an all-gather based compressor (TernGrad, QSGD, top-k)
sends ``W/2`` times more per byte of payload than an all-reduce: 2-bit codes against fp32
all-reduce save ``(2·(W−1)/W·4N) / ((W−1)·N/4) = 32/W`` (16× at W = 2, none at W = 32). A step-time model for a bandwidth-bound network is ``t ≈ t_compute + ring_bytes / B``.
"""

from __future__ import annotations

import threading
from enum import Enum
from typing import Any

from torch import Tensor

__all__ = ["Collective", "CommStats", "ring_bytes"]


class Collective(str, Enum):
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"


def ring_bytes(op: Collective | str, nbytes: float, world_size: int) -> float:
    """Bytes one rank sends for a collective of ``nbytes`` per rank under ring algorithms."""
    w = int(world_size)
    if w <= 1:
        return 0.0
    if Collective(op) is Collective.ALL_REDUCE:
        return 2.0 * (w - 1) / w * nbytes
    return float((w - 1) * nbytes)


class CommStats:
    """Per-rank byte counters kept by every cimkit comm hook (thread-safe: callbacks may run on
    communication threads).

    ``record(step, op, *tensors)`` adds the tensors' sizes; ``summary()`` gives per-step means over
    the steps recorded so far.
    """

    def __init__(self, world_size: int) -> None:
        self.world_size = int(world_size)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.payload_bytes = 0
            self.ring_bytes = 0.0
            self.collectives = 0
            self._steps = 0
            self._last_step: int | None = None

    @property
    def steps(self) -> int:
        """Training steps in which something was recorded."""
        return self._steps

    def record(self, step: int, op: Collective | str, *tensors: Tensor) -> int:
        """Count ``tensors`` sent by one collective ``op`` at training ``step``; returns their bytes."""
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        with self._lock:
            self.payload_bytes += nbytes
            self.ring_bytes += ring_bytes(op, nbytes, self.world_size)
            self.collectives += 1
            if step != self._last_step:  # steps arrive in order: DDP finishes a step's hooks before the next
                self._steps += 1
                self._last_step = int(step)
        return nbytes

    def summary(self) -> dict[str, Any]:
        """JSON-able per-step means: ``payload_bytes_per_step``, ``ring_bytes_per_step``, ``collectives_per_step``."""
        with self._lock:
            n = max(self.steps, 1)
            return {
                "world_size": self.world_size,
                "steps": self.steps,
                "payload_bytes_per_step": self.payload_bytes / n,
                "ring_bytes_per_step": self.ring_bytes / n,
                "collectives_per_step": self.collectives / n,
                "payload_bytes_total": self.payload_bytes,
            }
