"""``retain_freed_memory``: large tensors reuse mapped pages instead of faulting fresh ones."""

from __future__ import annotations

import sys

import pytest
import torch

from cimkit.utils import allocator_mode, machine_info, retain_freed_memory

resource = pytest.importorskip("resource")


def _faults_per_alloc(n: int = 50) -> float:
    x = torch.ones(4 << 20)  # 16 MiB: above glibc's initial mmap threshold
    for _ in range(20):  # the heap settles
        y = x * 2.0
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        y = x * 2.0  # a fresh 16 MiB result each time, the previous one freed
    del y
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_retained_memory_is_reused_without_page_faults() -> None:
    if not retain_freed_memory():
        pytest.skip("the C library is not glibc (no mallopt); nothing to tune")
    assert allocator_mode().startswith("retain")
    assert machine_info()["allocator"] == allocator_mode()
    pages = (16 << 20) // 4096
    # without retention every fresh 16 MiB result can fault all its 4096 pages in again; with it the
    # freed pages are reused (the bound leaves room for unrelated faults of the interpreter)
    assert _faults_per_alloc() < 0.05 * pages


def test_cli_accepts_release_memory() -> None:
    from cimkit.cli import build_parser

    args = build_parser().parse_args(["--release-memory", "list"])
    assert args.release_memory


def test_machine_info_records_the_cpu_code_paths() -> None:
    """The ATen capability in use and the pinning variables (set in a fresh process, since they are
    read when the libraries first run) land in every results file's machine record."""
    import json
    import subprocess
    import sys

    code = "import json; from cimkit.utils import machine_info as m; i = m(); print(json.dumps([i['cpu_capability'], i['numerics_env']]))"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    cap, pinned = json.loads(out)
    assert cap == "DEFAULT" and pinned["ATEN_CPU_CAPABILITY"] == "default" and pinned["MKL_CBWR"] == "COMPATIBLE"
