"""A small MLP trained on scikit-learn's digits, shared by the conversion and CIM tests."""

from __future__ import annotations

import pytest
import torch

from cimkit.data import TensorLoader, load_dataset
from cimkit.models import create
from cimkit.train import TrainConfig, evaluate, fit


@pytest.fixture(scope="session")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_mlp(digits):  # type: ignore[no-untyped-def]
    """(trained 64-256-256-10 MLP in eval mode, its test accuracy, 8 calibration batches, test loader)."""
    torch.manual_seed(0)
    m = create("mlp", **digits.model_spec(), hidden=(256, 256))
    train = TensorLoader(digits.x_train, digits.y_train, 64, shuffle=True, seed=0)
    fit(m, train, TrainConfig(epochs=20, lr=1e-3), progress=False)
    test = TensorLoader(digits.x_test, digits.y_test, 1000)
    calib = [xb for _, (xb, _) in zip(range(8), train)]
    return m.eval(), float(evaluate(m, test)["accuracy"]), calib, test
