"""Tasks beyond classification go through the whole runner: every kind reports the task's primary
metric, the summary table and the report use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cimkit.experiment import ExperimentConfig, run_experiment
from cimkit.report.summary import summary_rows

VARIANTS = [
    {"kind": "fp32"},
    {"kind": "ptq", "w_bits": 8, "a_bits": 8, "calib_batches": 1},
    {"kind": "qat", "w_bits": 6, "a_bits": 8, "epochs": 1, "calib_batches": 1},
    {"kind": "analog", "device": "pcm", "times": [1.0, 86400.0], "repeats": 2, "calib_batches": 1},
    {"kind": "pipeline", "name": "W8 on RRAM", "steps": [{"op": "quantize", "w_bits": 8, "a_bits": 0},
                                                         {"op": "analog", "device": "rram"}],
     "eval": {"protocol": "chips_times", "repeats": 2, "times": [1.0]}},
]  # fmt: skip


def _check(res: dict, primary: str, unit: str, tmp: Path) -> None:
    assert res["task"]["primary"] == primary
    for v in res["variants"]:
        assert primary in v["metrics"] and v["units"][primary] == unit, v["name"]
    headers, rows = summary_rows(res)
    assert headers[2] == primary and len(rows) == len(VARIANTS)
    html = (tmp / "run" / "report.html").read_text()
    assert f"{primary} vs time after programming" in html


def test_regression_siren_image(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_dict({
        "name": "inr", "dataset": "image_fit", "dataset_args": {"size": 16}, "model": "siren", "threads": 1,
        "train": {"epochs": 200, "batch_size": 256, "lr": 1e-4, "schedule": "constant"},
        "variants": VARIANTS,
    })  # fmt: skip
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    _check(res, "psnr", "dB", tmp_path)
    by = {v["name"]: v["metrics"] for v in res["variants"]}
    from cimkit.data import load_dataset
    from cimkit.tasks.regression import psnr_db

    y = load_dataset("image_fit", size=16).y_test
    constant = psnr_db(float(((y - y.mean()) ** 2).mean()), 1.0)
    assert by["fp32"]["psnr"] > constant + 6.0  # a fitted image beats the best constant predictor


def test_next_token_char_gpt(tmp_path: Path, datasets_dir: Path) -> None:
    cfg = ExperimentConfig.from_dict({
        "name": "lm", "dataset": "tinyshakespeare", "dataset_args": {"seq_len": 16, "targets": "sequence", "stride": 128},
        "model": "char_gpt", "model_args": {"size": "tiny"}, "threads": 1, "eval_batch_size": 512,
        "train": {"epochs": 1, "batch_size": 64, "lr": 3e-3, "optimizer": "adamw"}, "variants": VARIANTS,
    })  # fmt: skip
    res = run_experiment(cfg, tmp_path / "run", data_dir=datasets_dir, progress=False)
    _check(res, "loss", "nats/token", tmp_path)
    by = {v["name"]: v["metrics"] for v in res["variants"]}
    assert by["fp32"]["loss"] < 3.5  # below the uniform-guess loss ln(65) = 4.17 after one short epoch
    assert by["fp32"]["bpc"] == pytest.approx(by["fp32"]["loss"] / 0.6931471805599453)
