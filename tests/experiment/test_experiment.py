from __future__ import annotations

import json
from pathlib import Path

import pytest

from cimkit.cli import main
from cimkit.config import dumps_toml
from cimkit.errors import ConfigError
from cimkit.experiment import ExperimentConfig, load_experiment

TINY = {
    "name": "tiny",
    "seed": 3,
    "threads": 1,
    "dataset": "digits",
    "model": "small_cnn",
    "model_args": {"width": 4},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.01},
    "variants": [{"kind": "fp32"}, {"kind": "fp32", "name": "again"}],
}


def _write(tmp_path: Path, data: dict, name: str = "exp.toml") -> Path:
    p = tmp_path / name
    p.write_text(dumps_toml(data))
    return p


def _run(tmp_path: Path, exp: Path, out: str, *extra: str) -> dict:
    assert main(["-q", "run", str(exp), "--out", str(tmp_path / out), "--no-progress", *extra]) == 0
    return json.loads((tmp_path / out / "results.json").read_text())


def test_run_end_to_end_and_reuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = _write(tmp_path, TINY)
    r = _run(tmp_path, exp, "a")
    assert r["complete"] and r["baseline"]["reused"] is False
    assert [v["name"] for v in r["variants"]] == ["fp32", "again"]
    for v in r["variants"]:
        assert v["kind"] == "fp32" and 0.0 <= v["metrics"]["accuracy"] <= 1.0
        assert v["units"]["accuracy"] == "fraction"
    assert r["variants"][0]["metrics"]["accuracy"] > 0.5  # 3 epochs on digits; chance is 0.1
    assert r["experiment"]["seed"] == 3 and "torch" in r["machine"]
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html  # self-contained, plots embedded
    out = capsys.readouterr().out
    assert "fp32" in out and "results.json" in out
    again = _run(tmp_path, exp, "a")
    assert again["baseline"]["reused"] is True and again["baseline"]["units"]["train_seconds"] == "s"
    assert again["variants"][0]["metrics"] == r["variants"][0]["metrics"]


def test_same_seed_identical_results(tmp_path: Path) -> None:
    exp = _write(tmp_path, {**TINY, "variants": [{"kind": "fp32"}]})
    a, b = _run(tmp_path, exp, "a"), _run(tmp_path, exp, "b")
    assert a["variants"][0]["metrics"] == b["variants"][0]["metrics"]
    assert a["baseline"]["history"][-1]["loss"] == b["baseline"]["history"][-1]["loss"]
    c = _run(tmp_path, _write(tmp_path, {**TINY, "seed": 4, "train": {**TINY["train"], "seed": 1}}, "c.toml"), "c")
    assert c["baseline"]["history"][-1]["loss"] != a["baseline"]["history"][-1]["loss"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modle": "lenet5"}, "modle: unknown key for ExperimentConfig (did you mean 'model'?)"),
        ({"model": "lenet"}, "unknown model 'lenet' (did you mean 'lenet5'?)"),
        ({"dataset": "mnits"}, "did you mean 'mnist'?"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer, got 'ten'"),
        ({"train": {"lr": -1.0}}, "train.lr: -1.0 is out of range"),
        ({"seed": 1.5}, "seed: expected an integer"),
        ({"variants": [{"kind": "fp33"}]}, "variants[0].kind: unknown variant kind 'fp33' (did you mean 'fp32'?)"),
        ({"variants": [{"kind": "fp32"}, {"kind": "fp32"}]}, "duplicate name(s) fp32"),
        ({"model": "char_cnn"}, "takes text inputs but dataset 'digits' is image"),
    ],
)
def test_config_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str
) -> None:
    exp = _write(tmp_path, {**TINY, **change})
    assert main(["run", str(exp), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cimkit: error:") and "\n" not in err and "Traceback" not in err
    assert message in err
    assert not (tmp_path / "x" / "results.json").exists()


def test_missing_and_malformed_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    assert main(["run", str(bad)]) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_default_and_examples_parse() -> None:
    root = Path(__file__).resolve().parents[2]
    d = load_experiment(None)
    assert d.dataset == "digits" and ExperimentConfig.from_toml(d.to_toml()) == d
    for f in sorted((root / "examples").glob("*.toml")):
        load_experiment(str(f))  # every shipped example is valid


def test_list_topics(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "models", "le*"]) == 0
    assert capsys.readouterr().out.startswith("lenet5")
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in ("digits", "mnist", "fashion-mnist", "cifar10", "tinyshakespeare"))
    assert main(["list", "variants"]) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in ("fp32", "ptq", "qat"))
    assert main(["list", "quant-presets", "w8*"]) == 0
    assert capsys.readouterr().out.split()[0] == "w8"
    assert main(["list", "modles"]) == 2
    assert "did you mean 'models'" in capsys.readouterr().err


def test_config_command_prints_valid_toml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    assert ExperimentConfig.from_toml(capsys.readouterr().out) == ExperimentConfig()


def test_api_rejects_bad_device() -> None:
    with pytest.raises(ConfigError, match="device"):
        ExperimentConfig(device="tpu")


def test_threads_flag_overrides_file(tmp_path: Path) -> None:
    import torch

    from cimkit.utils import available_cores

    before = torch.get_num_threads()
    try:
        r = _run(tmp_path, _write(tmp_path, {**TINY, "threads": 1, "variants": [{"kind": "fp32"}]}), "t", "--threads", "2")
        # --threads wins over the file; set_threads caps it at the cores this process may use
        assert r["experiment"]["threads"] == 2 and torch.get_num_threads() == min(2, available_cores())
    finally:
        torch.set_num_threads(before)


def test_model_args_that_contradict_the_dataset_are_a_config_error() -> None:
    """A key the dataset sets (num_classes, a text window's block_size) may be repeated in model_args
    with the same value; a different value is named, not a TypeError from inside the factory."""
    from cimkit.data import load_dataset
    from cimkit.experiment.runner import build_model

    data = load_dataset("digits")
    same = ExperimentConfig.from_dict({**TINY, "model_args": {"width": 4, "num_classes": 10}})
    assert build_model(same, data)(data.x_test[:2]).shape == (2, 10)
    other = ExperimentConfig.from_dict({**TINY, "model_args": {"width": 4, "num_classes": 5}})
    with pytest.raises(ConfigError, match=r"model_args.num_classes = 5: the dataset 'digits' sets num_classes = 10"):
        build_model(other, data)


def test_portable_numerics_restarts_with_the_libraries_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--portable-numerics: the same command in a fresh Python with the pinning variables set (the
    results file records them); no restart when they are all set already."""
    import os
    import subprocess
    import sys

    from cimkit.utils import PORTABLE_NUMERICS

    for k in PORTABLE_NUMERICS:
        monkeypatch.delenv(k, raising=False)
    exp = _write(tmp_path, {**TINY, "variants": [{"kind": "fp32"}]})
    argv = ["--portable-numerics", "-q", "run", str(exp), "--out", str(tmp_path / "p"), "--no-progress"]
    assert subprocess.call([sys.executable, "-m", "cimkit", *argv], env=os.environ.copy()) == 0
    machine = json.loads((tmp_path / "p" / "results.json").read_text())["machine"]
    assert machine["numerics_env"] == PORTABLE_NUMERICS

    calls: list = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: calls.append(a) or 0)
    for k, v in PORTABLE_NUMERICS.items():
        monkeypatch.setenv(k, v)
    assert main([*argv[:-3], "--out", str(tmp_path / "q"), "--no-progress"]) == 0
    assert not calls and (tmp_path / "q" / "results.json").is_file()  # ran here, no restart
