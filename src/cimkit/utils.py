"""Small shared helpers: seeding, machine info, progress bars, timing."""

from __future__ import annotations

import logging
import os
import platform
import random
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

log = logging.getLogger("cimkit")
T = TypeVar("T")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (cimkit's own code uses explicit generators)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, *names: object) -> int:
    """A stable 63-bit seed derived from ``seed`` and names (independent streams per purpose)."""
    import hashlib

    h = hashlib.sha256(repr((seed, *names)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def machine_info() -> dict[str, Any]:
    """What ran this: platform, CPU, cores, python/torch/numpy versions, torch threads, CUDA device."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/None -> cuda if available else cpu; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class progress(Iterable[T]):
    """A dependency-free progress bar on stderr (one line, rewritten in place).

    ``for x in progress(it, total=n, desc="train", enabled=True): ...``; ``bar.set(loss=0.1)`` adds
    fields. Disabled (or stderr not a terminal and ``force`` false) it logs nothing and costs nothing.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        total: int | None = None,
        desc: str = "",
        enabled: bool = True,
        *,
        force: bool = False,
        unit: str = "it",
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = desc
        self.unit = unit
        self.enabled = enabled and (force or sys.stderr.isatty())
        self.fields: dict[str, Any] = {}
        self.n = 0
        self._t0 = time.perf_counter()
        self._last = 0.0

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled:
            now = time.perf_counter()
            if now - self._last > 0.1 or (self.total is not None and self.n >= self.total):
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        el = now - self._t0
        rate = self.n / el if el > 0 else 0.0
        if self.total:
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(frac * 20)
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            head = f"{self.desc} [{bar:<20}] {self.n}/{self.total} {el:.0f}s<{eta:.0f}s"
        else:
            head = f"{self.desc} {self.n} {self.unit} {el:.0f}s"
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items())
        sys.stderr.write(f"\r{head} {rate:.1f}{self.unit}/s {extra}\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.enabled = False

    def __iter__(self) -> Iterator[T]:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()
