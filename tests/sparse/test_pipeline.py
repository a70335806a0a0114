"""The prune / regularize / remove steps inside cimkit.experiment.run_experiment on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cimkit.errors import ConfigError
from cimkit.experiment import ExperimentConfig, run_experiment


def _cfg(variants: list[dict]) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"name": "sparse", "dataset": "digits", "model": "small_cnn",
                                       "model_args": {"width": 8}, "threads": 1, "eval_batch_size": 512,
                                       "train": {"epochs": 2, "batch_size": 64, "lr": 3e-3},
                                       "variants": variants})  # fmt: skip


def test_prune_regularize_remove_steps_run_in_an_experiment(tmp_path: Path) -> None:
    prune = {"op": "prune", "pattern": "filter", "sparsity": 0.5}
    variants = [
        {"kind": "pipeline", "name": "masked", "steps": [prune]},
        {"kind": "pipeline", "name": "removed", "steps": [prune, {"op": "remove", "latency_rounds": 3}]},
        {"kind": "pipeline", "name": "ssl", "steps": [
            {"op": "regularize", "patterns": ["filter", "channel"], "strength": 1e-3, "finetune": {"epochs": 1},
             "threshold": 0.2}, {"op": "remove", "latency_rounds": 0}]},
        {"kind": "pipeline", "name": "gradual", "steps": [
            {"op": "prune", "pattern": "block", "sparsity": 0.5, "tile_rows": 16, "tile_cols": 8,
             "schedule": "gradual", "finetune": {"epochs": 1}, "events": 3},
            {"op": "quantize", "w_bits": 4, "calib_batches": 1}]},
        {"kind": "pipeline", "name": "iterative", "steps": [
            {"op": "prune", "pattern": "filter", "sparsity": 0.75, "schedule": "iterative", "rounds": 2,
             "finetune": {"epochs": 1}}, {"op": "remove", "latency_rounds": 0}]},
    ]  # fmt: skip
    res = run_experiment(_cfg(variants), tmp_path / "run", progress=False)
    assert res["complete"]
    v = {r["name"]: r for r in res["variants"]}
    # removal is exact: the shrunken model scores what the masked model scores
    assert v["removed"]["metrics"]["accuracy"] == v["masked"]["metrics"]["accuracy"]
    sp = v["removed"]["details"]["sparse"]
    assert sp["after"]["total"]["macs"] < 0.5 * sp["before"]["total"]["macs"]  # both convs lose half their filters
    assert sp["after"]["total"]["params"] < sp["before"]["total"]["params"]
    assert {d["name"]: d["after"] for d in sp["removal"]["dims"]} == {"features.0": 4, "features.3": 8}
    assert sp["latency_ms"]["before"] > 0 and "latency_speedup" in v["removed"]["metrics"]
    assert v["masked"]["metrics"]["macs_ratio"] == 1.0  # masks alone do not change the dense MACs
    assert v["removed"]["details"]["eval_protocol"] == "sparse"
    assert v["ssl"]["details"]["sparse"]["regularize"]["kind"] == "group_lasso"
    grad = v["gradual"]["details"]["sparse"]
    assert grad["prune"]["events"][-1][1] == pytest.approx(0.5)
    assert grad["after"]["total"]["occupied_arrays"] < grad["before"]["total"]["occupied_arrays"]
    assert v["iterative"]["details"]["sparse"]["prune"]["sparsities"] == pytest.approx([0.5, 0.75])
    for r in res["variants"]:
        assert set(r["metrics"]) <= set(r["units"]) and 0 <= r["metrics"]["accuracy"] <= 1
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Sparsity: model size" in html
    json.dumps(res)  # JSON-able


def test_impossible_settings_are_rejected_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="finetune"):
        _cfg([{"kind": "pipeline", "steps": [{"op": "prune", "schedule": "gradual"}]}])
    bad = _cfg([{"kind": "pipeline", "steps": [{"op": "prune", "pattern": "head"}]}])
    with pytest.raises(ConfigError, match="head"):
        run_experiment(bad, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "cache").exists() or not any((tmp_path / "bad" / "cache").glob("baseline*"))
