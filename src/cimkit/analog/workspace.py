"""Reusable scratch memory for the temporaries of no-grad analog inference.

A CPU tensor of a few MiB obtained fresh from the allocator usually comes back as new pages, and
the kernel faults each page in (and zeroes it) on first touch: for the large, short-lived
temporaries of an analog forward (DAC codes of the whole input, the per-tile partial sums before
they are summed) that costs as much as the arithmetic done on them. :func:`scratch` hands out views
of one buffer per (slot, dtype, device) and thread, grown to the largest request seen, so the
pages stay mapped between layers and forwards. CUDA's caching allocator already recycles memory:
there, and whenever autograd is recording (it could keep a reference), :func:`scratch` returns
``None`` and the caller allocates as usual.

A scratch view is valid only until the next request of the same slot on the same thread; callers
use it for a temporary that never leaves the function (never an output, never recorded).
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

__all__ = ["clear_scratch", "scratch", "scratch_bytes"]

_local = threading.local()


def _buffers() -> dict[tuple[str, torch.dtype, torch.device], Tensor]:
    bufs = getattr(_local, "buffers", None)
    if bufs is None:
        bufs = _local.buffers = {}
    return bufs


def scratch(slot: str, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype,
            device: torch.device) -> Tensor | None:  # fmt: skip
    """An uninitialised contiguous tensor of ``shape`` for a temporary, or ``None`` where fresh
    memory is the right choice (CUDA, autograd recording; module docstring)."""
    n = math.prod(shape)
    if device.type != "cpu" or torch.is_grad_enabled():
        return None
    key = (slot, dtype, device)
    bufs = _buffers()
    buf = bufs.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.empty(n, dtype=dtype, device=device)
        bufs[key] = buf
    strides, step = [], 1
    for d in reversed(tuple(shape)):
        strides.append(step)
        step *= d
    return buf.as_strided(tuple(shape), tuple(reversed(strides)))  # a contiguous view of its first n elements


def scratch_bytes() -> int:
    """Bytes held by this thread's scratch buffers."""
    return sum(b.numel() * b.element_size() for b in _buffers().values())


def clear_scratch() -> None:
    """Release this thread's scratch buffers."""
    _buffers().clear()
