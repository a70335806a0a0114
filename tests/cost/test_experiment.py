"""The cost concern in the workbench: every variant priced, [cost] settings, the report, `cimkit cost`,
energy budgets in mixed precision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cimkit.cli import build_parser, main
from cimkit.config import dumps_toml
from cimkit.cost import estimate
from cimkit.errors import ConfigError
from cimkit.experiment import ExperimentConfig, run_experiment
from cimkit.mixed import MixedConfig, analyze
from cimkit.models import create

torch.set_num_threads(1)

VARIANTS = [
    {"kind": "fp32"},
    {"kind": "ptq", "name": "W8A8", "w_bits": 8, "a_bits": 8, "calib_batches": 1},
    {"kind": "analog", "name": "PCM", "repeats": 1, "times": [1.0], "calib_batches": 1},
    {"kind": "pipeline", "name": "W4 on RRAM", "steps": [
        {"op": "quantize", "w_bits": 4, "calib_batches": 1}, {"op": "analog", "device": "rram", "calib_batches": 1}],
     "eval": {"protocol": "chips_times", "repeats": 1, "times": [1.0]}},
]  # fmt: skip


def _cfg(**extra: object) -> dict:
    return {"name": "tiny_cost", "dataset": "digits", "model": "small_cnn", "model_args": {"width": 4}, "threads": 1,
            "train": {"epochs": 1, "batch_size": 64, "lr": 3e-3}, "variants": VARIANTS, **extra}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("cost") / "run"
    cfg = ExperimentConfig.from_dict(_cfg(cost={"adc": "isaac_32nm"}))
    return run_experiment(cfg, out, progress=False), out


def test_every_variant_carries_its_cost(run: tuple[dict, Path]) -> None:
    _, out = run
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiment"]["cost"]["adc"] == "isaac_32nm"  # the [cost] table is part of the experiment
    by = {v["name"]: v for v in saved["variants"]}
    for v in saved["variants"]:
        m, u = v["metrics"], v["units"]
        assert m["energy_uj"] > 0 and u["energy_uj"] == "µJ" and m["latency_us"] > 0 and u["area_mm2"] == "mm²"
        c = v["details"]["cost"]
        assert c["energy_uj"] == pytest.approx(m["energy_uj"])
        assert sum(c["energy_components_uj"].values()) == pytest.approx(m["energy_uj"], rel=1e-9)
        assert sum(r["energy_uj"] for r in c["layers"]) == pytest.approx(m["energy_uj"], rel=1e-9)
        assert m["macs"] > 0 and u["macs"] == "MAC/sample"
        if c["hardware"] == "digital":  # storage and bit-ops are digital figures; crossbars hold conductances
            assert m["size_bytes"] > 0 and u["size_bytes"] == "bytes" and m["bops"] > 0
    assert "size_bytes" not in by["PCM"]["metrics"] and "bops" not in by["PCM"]["metrics"]
    # digital variants on the digital baseline, analog ones on their device's CIM spec with the swapped ADC
    assert by["fp32"]["details"]["cost"]["spec"] == "systolic_22nm" and by["fp32"]["details"]["cost"]["adc"] is None
    assert by["PCM"]["details"]["cost"]["spec"] == "pcm_22nm" and by["PCM"]["details"]["cost"]["adc"] == "isaac_32nm"
    assert by["W4 on RRAM"]["details"]["cost"]["spec"] == "rram_22nm"
    assert by["W4 on RRAM"]["details"]["cost"]["hardware"] == "cim"
    assert by["W8A8"]["metrics"]["energy_uj"] < by["fp32"]["metrics"]["energy_uj"]  # 8-bit MACs are cheaper
    fc = next(r for r in by["W4 on RRAM"]["details"]["cost"]["layers"] if r["op"] == "linear")
    assert fc["w_bits"] == 4 and fc["hardware"] == "cim" and fc["adc_conversions"] > 0
    html = (out / "report.html").read_text()
    assert "Accuracy vs energy per inference" in html and "Energy per layer by component" in html
    assert "isaac_32nm" in html


def test_cost_settings_validate_round_trip_and_turn_off(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_dict(_cfg(cost={"spec": "rram_32nm", "layers": False}))
    assert cfg.settings("cost").spec == "rram_32nm"
    text = cfg.to_toml()
    assert "[cost]" in text
    assert ExperimentConfig.from_toml(text) == cfg
    with pytest.raises(ConfigError, match="cost.spec: unknown hardware spec 'rram_23nm'"):
        ExperimentConfig.from_dict(_cfg(cost={"spec": "rram_23nm"}))
    with pytest.raises(ConfigError, match="cost.spek: unknown key"):
        ExperimentConfig.from_dict(_cfg(cost={"spek": "rram_22nm"}))
    with pytest.raises(ConfigError, match="did you mean 'cost'"):
        ExperimentConfig.from_dict(_cfg(cots={"spec": "rram_22nm"}))
    off = ExperimentConfig.from_dict({**_cfg(cost={"enabled": False}), "variants": [{"kind": "fp32"}]})
    res = run_experiment(off, tmp_path / "off", progress=False)
    assert "energy_uj" not in res["variants"][0]["metrics"] and "cost" not in res["variants"][0]["details"]


def test_cimkit_cost_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "resnet20", "--spec", "rram_22nm", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "rram_22nm" in out and "layer3.2.conv2" in out and "total" in out
    d = json.loads((tmp_path / "c.json").read_text())
    ref = estimate(create("resnet20", in_channels=3, num_classes=10, input_size=(32, 32)).eval(),
                   torch.zeros(1, 3, 32, 32), "rram_22nm")  # fmt: skip
    assert d["total"]["energy_uj"] == pytest.approx(ref.total()["energy_uj"], rel=1e-9)
    exp = tmp_path / "exp.toml"
    exp.write_text(dumps_toml(_cfg(cost={"spec": "sram_22nm"})))
    assert main(["cost", str(exp), "--adc", "survey_22nm"]) == 0
    out = capsys.readouterr().out
    assert "sram_22nm" in out and "survey_22nm" in out
    assert main(["cost", "resnet20", "--spec", "nope"]) == 2
    assert "unknown hardware spec" in capsys.readouterr().err
    build_parser().parse_args(["cost", "char_gpt", "--spec", "systolic_22nm", "--map", "all"])


def test_mixed_precision_takes_an_energy_budget() -> None:
    torch.manual_seed(0)
    model = create("small_cnn", in_channels=1, num_classes=4, input_size=(8, 8), width=4).eval()
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 4, (64,))
    cfg = MixedConfig(probes=4, min_probes=4, hessian_samples=64, spec="rram_22nm", a_bits=8)
    a = analyze(model, (x, y), cfg, progress=False)
    e4 = a.uniform_cost("energy_uj", 4)
    assert e4 == pytest.approx(float(a.cost("energy_uj")[:, a.table.bits.index(4)].sum()))
    assert a.uniform_cost("energy_uj", 2) < e4 < a.uniform_cost("energy_uj", 8)  # more slices, more energy
    plan = a.allocate({"energy_uj_uniform_bits": 4})
    assert plan.costs["energy_uj"] <= e4 * (1 + 1e-9)
    assert plan.omega <= a.uniform(4).omega + 1e-12  # uniform W4 is feasible, so the plan is no worse
    # the ILP's table is each layer's priced record at that width on the spec
    e = a.cost("energy_uj")
    assert np.all(np.diff(e, axis=1) > 0)
    lat = a.allocate({"latency_us_uniform_bits": 3, "size_uniform_bits": 6})
    assert lat.costs["latency_us"] <= a.uniform_cost("latency_us", 3) * (1 + 1e-9)
    with pytest.raises(ConfigError, match="unknown budget 'energy_j'"):
        a.allocate({"energy_j": 1.0})
    with pytest.raises(ConfigError, match="outside the candidates"):
        a.uniform_cost("energy_uj", 9.0)
    # tiles on a spec are the spec's crossbar tiles
    t = a.cost("tiles")
    assert t.shape == e.shape and np.all(t[:, 0] <= t[:, -1])
