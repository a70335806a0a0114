"""PTQ keeps a trained model's accuracy, QAT recovers low-bit accuracy, and the experiment kinds run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from cimkit.data import TensorLoader, load_dataset
from cimkit.models import create
from cimkit.quant import QuantConfig, calibrate, quantize_
from cimkit.train import TrainConfig, evaluate, fit

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits() -> tuple:
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = create("lenet5", input_size=(8, 8))
    loader = TensorLoader(ds.x_train, ds.y_train, 64, shuffle=True, seed=0)
    fit(model, loader, TrainConfig(epochs=8, lr=3e-3, batch_size=64, seed=0), progress=False)
    return ds, model.eval()


def _acc(model: nn.Module, ds) -> float:
    return evaluate(model, TensorLoader(ds.x_test, ds.y_test, 500))["accuracy"]


def test_ptq_w8a8_keeps_accuracy(digits) -> None:
    ds, model = digits
    fp32 = _acc(model, ds)
    assert fp32 > 0.8
    q = quantize_(copy.deepcopy(model), "w8a8")
    calibrate(q, [ds.x_train[i : i + 128] for i in range(0, 512, 128)])
    assert abs(_acc(q, ds) - fp32) <= 0.01
    # a 2-bit PTQ model is clearly worse: the accuracy check above is not vacuous
    q2 = quantize_(copy.deepcopy(model), QuantConfig(w_bits=2, a_bits=2))
    calibrate(q2, [ds.x_train[:256]])
    assert _acc(q2, ds) < fp32 - 0.1


@pytest.mark.parametrize("cfg", [QuantConfig(w_mode="binary", a_bits=4), QuantConfig(w_bits=2, a_bits=3, lsq=True)],
                         ids=lambda c: c.label())  # fmt: skip
def test_qat_recovers_low_bit_accuracy(digits, cfg: QuantConfig) -> None:
    ds, model = digits
    q = quantize_(copy.deepcopy(model), cfg)
    calibrate(q, [ds.x_train[:256]])
    ptq = _acc(q, ds)
    fit(q, TensorLoader(ds.x_train, ds.y_train, 64, shuffle=True, seed=1),
        TrainConfig(epochs=3, lr=1e-3, batch_size=64, seed=1), progress=False)  # fmt: skip
    qat = _acc(q, ds)
    assert qat >= ptq + 0.1
    assert qat >= _acc(model, ds) - 0.15


def test_ptq_and_qat_variants_in_an_experiment(tmp_path) -> None:
    from cimkit.experiment import ExperimentConfig, run_experiment

    cfg = ExperimentConfig.from_dict({
        "name": "q", "dataset": "digits", "model": "small_cnn", "threads": 1,
        "train": {"epochs": 4, "batch_size": 64, "lr": 3e-3},
        "variants": [
            {"kind": "fp32"},
            {"kind": "ptq", "name": "w8a8", "calib_batches": 2},
            {"kind": "qat", "name": "bin", "w_mode": "binary", "a_bits": 4, "epochs": 1,
             "overrides": {"@first": {"w_bits": 8}}},
        ],
    })  # fmt: skip
    res = run_experiment(cfg, tmp_path, progress=False)
    by = {v["name"]: v for v in res["variants"]}
    w8, b = by["w8a8"], by["bin"]
    for v in (w8, b):
        m = v["metrics"]
        assert set(v["units"]) == set(m)
        assert m["accuracy_drop"] == pytest.approx(100 * (m["fp32_accuracy"] - m["accuracy"]))
        assert m["fp32_accuracy"] == pytest.approx(by["fp32"]["metrics"]["accuracy"])
        assert len(v["details"]["layers"]) == 3 and m["compression"] > 3
    assert b["details"]["layers"][0]["w_bits"] == 8 and b["details"]["layers"][1]["w_bits"] == 1
    assert b["metrics"]["size_bytes"] < w8["metrics"]["size_bytes"]
    assert len(b["details"]["history"]) == 1 and "ptq_accuracy" in b["metrics"]
    json.loads((tmp_path / "results.json").read_text())
    report = (tmp_path / "report.html").read_text()
    assert "Post-training quantization" in report and "Quantization-aware training" in report
    assert "per-layer costs: bin" in report
