"""The ``analog`` experiment variant kind end to end on a tiny experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cimkit.analog.variants import AnalogVariantConfig, time_label
from cimkit.config import dumps_toml
from cimkit.errors import ConfigError
from cimkit.experiment import VARIANTS, ExperimentConfig, run_experiment

TINY = {
    "name": "tiny_analog",
    "seed": 1,
    "threads": 1,
    "dataset": "digits",
    "model": "small_cnn",
    "model_args": {"width": 4},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.01},
    "variants": [
        {"kind": "fp32"},
        {"kind": "analog", "name": "pcm", "times": [1.0, 86400.0, 31536000.0], "repeats": 3,
         "compensation": "none"},
        {"kind": "analog", "name": "pcm_hwa_comp", "times": [1.0, 86400.0, 31536000.0], "repeats": 3,
         "hwa": True, "hwa_epochs": 1, "mapping": "calibrated", "keep_last": True},
    ],
}  # fmt: skip


def test_time_labels_and_config_validation() -> None:
    assert [time_label(t) for t in (1.0, 3600.0, 86400.0, 31536000.0, 5400.0)] == ["1s", "1h", "1d", "1y", "1.5h"]
    assert "analog" in VARIANTS
    cfg = AnalogVariantConfig()
    assert cfg.times == [1.0, 3600.0, 86400.0, 31536000.0] and cfg.repeats == 10
    assert AnalogVariantConfig.from_toml(cfg.to_toml()) == cfg
    for bad in ({"device": "pcmm"}, {"times": []}, {"repeats": 0}, {"mapping_overrides": {"adc_bitz": 4}},
                {"hwa_noise": "loud"}):  # fmt: skip
        with pytest.raises(ConfigError):
            AnalogVariantConfig.from_dict(bad)


def test_analog_variant_end_to_end(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_toml(dumps_toml(TINY))
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert disk["complete"]
    by = {v["name"]: v for v in res["variants"]}
    fp32 = by["fp32"]["metrics"]["accuracy"]
    for name in ("pcm", "pcm_hwa_comp"):
        m, d = by[name]["metrics"], by[name]["details"]
        assert d["labels"] == ["1s", "1d", "1y"]
        assert len(d["per_repeat"]) == 3 and all(len(r) == 3 for r in d["per_repeat"])
        assert m["accuracy"] == pytest.approx(m["accuracy_1d"]) and m["fp32_accuracy"] == pytest.approx(fp32)
        assert 0.0 <= m["accuracy_1y"] <= 1.0 and m["accuracy_1d_std"] >= 0.0
        assert by[name]["units"]["accuracy_1y"] == "fraction"
    assert by["pcm_hwa_comp"]["metrics"]["analog_layers"] == by["pcm"]["metrics"]["analog_layers"] - 1  # keep_last
    assert by["pcm_hwa_comp"]["details"]["hwa_fit"]["history"]
    # without compensation, PCM drift costs accuracy after a year; compensation recovers most of it
    assert by["pcm"]["metrics"]["accuracy_1y"] < by["pcm"]["metrics"]["accuracy_1s"]
    assert by["pcm_hwa_comp"]["metrics"]["accuracy_1y"] > by["pcm"]["metrics"]["accuracy_1y"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Analog CIM: accuracy vs time after programming" in html and "data:image/png;base64," in html
