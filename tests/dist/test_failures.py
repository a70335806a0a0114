"""Failure policy: a rank that raises or is killed ends the run with an error naming it, never a hang."""

from __future__ import annotations

import dist_workers as w
import pytest

from cimkit.dist import DistributedError, spawn

_PG_ERRORS = ("RuntimeError", "DistBackendError", "DistNetworkError")  # what gloo raises for a dead peer


def test_an_exception_on_one_rank_ends_the_run_naming_the_rank() -> None:
    # rank 0 sleeps for 10 minutes: only the launcher's policy (terminate the rest) ends it early
    with pytest.raises(DistributedError) as info:
        spawn(w.raise_on_rank1, 2, timeout_s=120, kill_grace_s=2)
    err = info.value
    assert err.rank == 1 and list(err.errors) == [1]
    assert str(err).startswith("rank 1 failed: ValueError: boom from rank 1")
    assert "raise_on_rank1" in str(err)  # the rank's traceback comes along
    assert "still running" not in str(err)  # not the launcher's timeout


def test_surviving_rank_gets_an_error_from_the_process_group_not_a_hang() -> None:
    # on_failure="wait": nobody terminates rank 0; its next all_reduce must fail by itself
    with pytest.raises(DistributedError) as info:
        spawn(w.raise_after_collective, 2, timeout_s=120, pg_timeout_s=30, on_failure="wait")
    err = info.value
    assert set(err.errors) == {0, 1} and err.rank == 1
    assert "boom after one all_reduce" in err.errors[1]
    head = err.errors[0].splitlines()[0]
    assert head.startswith(_PG_ERRORS), head  # raised inside rank 0 by gloo (connection closed by peer)
    assert "still running" not in str(err)


def test_a_killed_rank_is_reported_with_its_signal() -> None:
    with pytest.raises(DistributedError) as info:
        spawn(w.sigkill_rank1, 2, timeout_s=120, pg_timeout_s=30, on_failure="wait")
    err = info.value
    assert err.rank == 1 and err.errors[1] == "rank 1 was killed by signal SIGKILL"
    assert err.errors[0].startswith(_PG_ERRORS)
