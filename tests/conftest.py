"""Shared test fixtures: one torch thread, the shared datasets folder, a seeded generator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("CIMKIT_TEST_DATA", ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The real MNIST / Fashion-MNIST / tinyshakespeare copies (../shared/datasets)."""
    if not SHARED_DATASETS.is_dir():
        pytest.fail(f"shared datasets not found at {SHARED_DATASETS}; set CIMKIT_TEST_DATA")
    return SHARED_DATASETS


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
