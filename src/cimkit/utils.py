"""Small shared helpers: seeding, machine info, progress bars, timing."""

from __future__ import annotations

import logging
import os
import platform
import random
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from cimkit.errors import ConfigError

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


# environment variables that change which code the CPU libraries run, and so the last bits of results
NUMERICS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR")
# the settings under which every emulated Intel and AMD CPU gave bit-identical results, and the native
# one differed only in sqrt (docs/reproducibility.md); the libraries read them when they first run, so
# they must be in the environment before Python starts
PORTABLE_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}


def machine_info() -> dict[str, Any]:
    """What ran this: platform, CPU, cores, python/torch/numpy versions, torch threads, CUDA device,
    ATen's CPU capability and the environment variables of :data:`NUMERICS_ENV` that are set."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "allocator": allocator_mode(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # the code paths the CPU libraries chose, and the settings that pin them (docs/reproducibility.md)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numerics_env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ},
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


MAX_THREADS = 1024  # larger thread counts are refused (creating them can exhaust a machine)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(n: int) -> int:
    """Use ``n`` torch CPU threads, capped at the cores available (with a warning); returns the count
    used. ``n`` outside ``[1, MAX_THREADS]`` is a :class:`~cimkit.errors.ConfigError`."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise ConfigError(f"threads: {n!r} is out of range; allowed: 1..{MAX_THREADS} (this machine has "
                          f"{available_cores()} cores)")  # fmt: skip
    cores = available_cores()
    if n > cores:
        log.warning("threads: %d asked for but only %d cores are available; using %d", n, cores, cores)
        n = cores
    torch.set_num_threads(n)
    return n


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
RETAIN_TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept before any is returned to the system
_allocator_mode = "default"


def retain_freed_memory() -> bool:
    """Keep freed CPU memory mapped for reuse (glibc only; elsewhere a no-op returning ``False``).

    By default glibc serves every allocation above a moving threshold (128 KiB rising to at most
    32 MiB) with a fresh ``mmap`` and returns it to the system on free; each reuse then faults its
    pages back in and the kernel zeroes them, about 0.5 ms per MiB. Work on large batched tensors
    (time-batched spiking layers, analog partial sums, (T·B)-row convolutions) allocates and frees
    tens of MiB per step and can spend a fifth of its time there. This sets ``M_MMAP_MAX = 0`` (the
    main heap serves every size) and ``M_TRIM_THRESHOLD = 1 GiB`` (``mallopt(3)``): the process keeps
    up to 1 GiB of freed heap for reuse, so its resident size stays near its peak. ``cimkit``
    commands call it (``--release-memory`` opts out); from Python, call it once at start. The same
    from the shell: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824``.
    """
    global _allocator_mode
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, RETAIN_TRIM_THRESHOLD))
    if ok:
        _allocator_mode = "retain freed memory (glibc M_MMAP_MAX 0, M_TRIM_THRESHOLD 1 GiB)"
    return ok


def allocator_mode() -> str:
    """How :func:`retain_freed_memory` left the CPU allocator (recorded in results)."""
    return _allocator_mode


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/None -> cuda if available else cpu; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class progress(Iterable[T]):
    """A progress bar on stderr, drawn by ``tqdm``, with cimkit's small call-site API.

    ``for x in progress(it, total=n, desc="train", enabled=True): ...``; ``bar.set(loss=0.1)`` adds
    fields shown after the bar; ``bar.update(n)`` / ``bar.close()`` drive it by hand. Disabled (or
    ``file`` not a terminal and ``force`` false) no bar is created: iterating yields the items of
    ``iterable`` and nothing is written.
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
        file: IO[str] | None = None,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = desc
        self.unit = unit
        out = sys.stderr if file is None else file
        isatty = getattr(out, "isatty", None)
        self.enabled = bool(enabled and (force or (isatty is not None and isatty())))
        self.fields: dict[str, Any] = {}
        self.n = 0
        self._bar: tqdm | None = None
        if self.enabled:
            self._bar = tqdm(total=self.total, desc=desc or None, unit=unit, file=out, mininterval=0.1,
                             dynamic_ncols=True, leave=True)  # fmt: skip

    def set(self, **fields: Any) -> None:
        """Add or change the fields shown after the bar (``loss=0.12``)."""
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.set_postfix(self.fields, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.enabled = False

    def __iter__(self) -> Iterator[T]:
        if self._bar is None:
            try:
                yield from self.iterable
            finally:
                self.close()
            return
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()
