"""The ``mixed`` experiment variant end to end through ``cimkit run`` on the 8x8 digits."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from cimkit.cli import main
from cimkit.config import dumps_toml
from cimkit.errors import ConfigError
from cimkit.experiment import VARIANTS, ExperimentConfig
from cimkit.mixed import BitPlan
from cimkit.mixed.variants import MixedVariantConfig

FAST = {"probes": 8, "min_probes": 8, "hessian_samples": 128, "calib_batches": 2, "qat_epochs": 1}


def test_mixed_variant_runs_and_reports(tmp_path: Path) -> None:
    exp = {
        "name": "tiny_mixed",
        "seed": 0,
        "threads": 1,
        "dataset": "digits",
        "model": "small_cnn",
        "model_args": {"width": 8},
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.01},
        "variants": [
            {"kind": "mixed", "name": "mp3", "size_uniform_bits": 3, "uniform_points": [2, 3, 8], "random_plans": 2,
             **FAST},
            {"kind": "mixed", "name": "mp4", "size_uniform_bits": 4, "uniform_points": [4], "data_free": True,
             "zeroq_samples": 64, "zeroq_iters": 30, **FAST},
        ],
    }  # fmt: skip
    p = tmp_path / "exp.toml"
    p.write_text(dumps_toml(exp))
    assert main(["-q", "run", str(p), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    by = {v["name"]: v for v in res["variants"]}
    for name in ("mp3", "mp4"):
        m = by[name]["metrics"]
        assert 0.0 <= m["accuracy"] <= 1.0 and m["accuracy"] > 0.3  # 10 classes: chance is 0.1
        plan = BitPlan.load(tmp_path / "out" / f"{name}.plan.json")
        assert plan.size_bytes == pytest.approx(m["plan_size_bytes"])
        assert m["plan_size_bytes"] < m["size_bytes"]  # the whole model also stores BatchNorm and other values
        assert m["energy_uj"] > 0 and "energy_uj" in by[name]["units"]  # priced by the cost model's result hook
        assert [x["w_bits"] for x in by[name]["details"]["layers"]] == list(plan.layer_bits.values())
    u = {x["bits"]: x for x in by["mp3"]["details"]["uniform"]}
    assert set(u) == {2, 3, 8} and u[2]["size_bytes"] < u[3]["size_bytes"] < u[8]["size_bytes"]
    assert by["mp3"]["metrics"]["plan_size_bytes"] <= u[3]["size_bytes"] + 1e-9  # the budget: uniform W3's size
    assert u[8]["accuracy"] > u[2]["accuracy"] - 0.02  # 8-bit PTQ is no worse than 2-bit PTQ
    rnd = by["mp3"]["details"]["random"]
    assert len(rnd) == 2 and all(r["size_bytes"] <= u[3]["size_bytes"] + 1e-9 for r in rnd)
    assert "random_accuracy_mean" in by["mp3"]["metrics"]
    front = by["mp3"]["details"]["pareto"]
    assert all(a["size_bytes"] < b["size_bytes"] and a["omega"] > b["omega"] for a, b in itertools.pairwise(front))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Plan per layer: mp3" in html and "Mixed precision: accuracy" in html
    assert "data:image/png;base64," in html


def test_mixed_variant_config_errors() -> None:
    assert "mixed" in VARIANTS
    with pytest.raises(ConfigError, match="uniform_points"):
        MixedVariantConfig(uniform_points=[5])
    with pytest.raises(ConfigError, match="qat_lr"):
        MixedVariantConfig(qat_lr=0)
    with pytest.raises(ConfigError, match=r"variants\[0\]\.size_uniform_bit"):
        ExperimentConfig.from_dict({"dataset": "digits", "variants": [{"kind": "mixed", "size_uniform_bit": 3}]})
    assert MixedVariantConfig().budgets() == {"size_uniform_bits": 4.0}  # the default budget
    assert MixedVariantConfig(size_bytes=1000).budgets() == {"size_bytes": 1000.0}
    cfg = MixedVariantConfig(size_uniform_bits=3.5, random_plans=5)
    assert MixedVariantConfig.from_toml(cfg.to_toml()) == cfg
    assert cfg.mixed_config().size_uniform_bits == 3.5


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "examples").glob("mixed_*.toml")))
def test_example_files_parse(path: Path) -> None:
    from cimkit.experiment import load_experiment

    cfg = load_experiment(str(path))
    assert any(s.kind == "mixed" for s in cfg.variant_specs())
