"""A chip × time analog sweep split over 2 ranks gathers to exactly the single-process sweep."""

from __future__ import annotations

import dist_workers as w

from cimkit.dist import SingleProcess, spawn


def test_distributed_chip_sweep_equals_single_process() -> None:
    single = w.chip_sweep(SingleProcess())  # 5 chips × 3 times, in this process
    runs = spawn(w.chip_sweep, 2, timeout_s=120)  # rank 0 programs chips 0, 2, 4; rank 1 chips 1, 3
    assert runs[0] == runs[1] == single  # exact: same per-chip seeds, same arithmetic
    assert len(single) == 5 and all(len(r) == 3 for r in single)
    assert len({tuple(r) for r in single}) > 1  # chips differ, so a wrong chip order would be caught
