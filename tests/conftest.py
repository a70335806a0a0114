"""Shared test fixtures: one torch thread, the real datasets folder (or a skip), a seeded generator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("CIMKIT_TEST_DATA", ROOT.parent / "shared" / "datasets"))
# CI sets CIMKIT_REQUIRE_DATA=1 (.ci/run): there a missing datasets folder is an error, never a skip.
REQUIRE_DATA = os.environ.get("CIMKIT_REQUIRE_DATA", "").strip() not in ("", "0")


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The real MNIST / Fashion-MNIST / tinyshakespeare copies (../shared/datasets).

    Absent, the test that asks for them skips with the reason (fails under CIMKIT_REQUIRE_DATA=1).
    """
    if SHARED_DATASETS.is_dir():
        return SHARED_DATASETS
    reason = (
        f"needs the real MNIST / Fashion-MNIST / tinyshakespeare files, not found at {SHARED_DATASETS} "
        "(set CIMKIT_TEST_DATA to the folder that holds mnist/, fashion-mnist/, tinyshakespeare/)"
    )
    if REQUIRE_DATA:
        pytest.fail(f"{reason}; CIMKIT_REQUIRE_DATA is set, so they are required")
    pytest.skip(reason)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
