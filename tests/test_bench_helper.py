"""benchmarks/_bench.py, the helper every benchmark runs on: data folder rule, interleaved timer,
report (table, JSON schema, the quick-file rule) and the experiment runner it hands accuracy work to."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("_bench", ROOT / "benchmarks" / "_bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_bench"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("_bench", None)


def test_data_dir_argument_then_env_then_shared_folder(bench, monkeypatch, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    monkeypatch.setattr(bench, "SHARED_DATA", shared)
    monkeypatch.delenv("CIMKIT_DATA", raising=False)
    assert bench.data_dir(None) is None  # no folder anywhere: cimkit's own default
    shared.mkdir()
    assert bench.data_dir(None) == shared
    monkeypatch.setenv("CIMKIT_DATA", str(tmp_path / "env"))
    assert bench.data_dir(None) == tmp_path / "env"
    assert bench.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert bench.parser("x", "doc").parse_args([]).data_dir == tmp_path / "env"  # the same rule as the default
    args = bench.parser("x", "doc").parse_args(["--quick", "--data-dir", str(tmp_path)])
    assert args.quick and args.data_dir == tmp_path and args.threads == 1 and not args.reuse


def test_interleaved_timer_calls_each_once_per_round_in_shuffled_orders(bench) -> None:
    log: list[str] = []
    fns = {k: (lambda k=k: log.append(k)) for k in "abcd"}
    out = bench.time_interleaved(fns, rounds=12, warmup=2)
    assert list(log[:8]) == ["a", "a", "b", "b", "c", "c", "d", "d"]  # warm-up first, not timed
    rounds = [log[8 + 4 * i : 12 + 4 * i] for i in range(12)]
    assert all(sorted(r) == list("abcd") for r in rounds)  # every function once per round
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    assert set(out) == set("abcd")
    assert all(t.cpu >= 0 and t.wall >= 0 for t in out.values())
    with pytest.raises(ValueError):
        bench.time_interleaved(fns, rounds=0)


def test_report_schema_goals_and_quick_file(bench, monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    rep = bench.Report("demo", quick=True)
    rep.row(model="m", ratio=1.25)
    rep.at_most("ratio", 1.25, 1.5)
    rep.at_least("accuracy", 0.5, 0.9)
    rep.skip("peer X is not importable")
    rep.print()
    text = capsys.readouterr().out
    assert "[met] ratio: 1.25 (goal <= 1.5)" in text and "[NOT MET] accuracy: 0.5 (goal >= 0.9)" in text
    path = rep.write()
    assert path == tmp_path / "demo.quick.json"  # a quick run never overwrites demo.json
    doc = json.loads(path.read_text())
    assert {"benchmark", "quick", "machine", "rows", "goals"} <= set(doc)
    assert doc["quick"] is True and doc["skipped"] == ["peer X is not importable"]
    assert [g["met"] for g in doc["goals"]] == [True, False]
    assert set(doc["goals"][0]) == {"what", "measured", "goal", "met"}
    assert bench.Report("demo", quick=False).path() == tmp_path / "demo.json"


def test_run_experiment_goes_through_the_runner(bench, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
    cfg = {"name": "tiny", "dataset": "digits", "model": "mlp", "threads": 1,
           "train": {"epochs": 1, "batch_size": 64, "lr": 3e-3},
           "variants": [{"kind": "fp32"}, {"kind": "ptq", "name": "W8A8", "w_bits": 8, "a_bits": 8,
                                           "calib_batches": 1}]}  # fmt: skip
    res = bench.run_experiment("tiny", cfg, quick=True)
    out = bench.run_dir("tiny", quick=True)
    assert out == tmp_path / "runs" / "tiny.quick" and (out / "results.json").is_file()
    by = bench.variants(res)
    assert set(by) == {"fp32", "W8A8"} and res["complete"] and not res["baseline"]["reused"]
    # the trained weights the runner cached give the fp32 variant's accuracy
    from cimkit.data import TensorLoader, load_dataset
    from cimkit.train import evaluate

    model = bench.trained_baseline(res, "tiny", quick=True)
    ds = load_dataset("digits")
    acc = evaluate(model, TensorLoader(ds.x_test, ds.y_test, 1000))["accuracy"]
    assert acc == pytest.approx(by["fp32"]["metrics"]["accuracy"], abs=1e-9)
    # a second run starts afresh (every figure measured again) unless asked to reuse the cache
    assert not bench.run_experiment("tiny", cfg, quick=True)["baseline"]["reused"]
    assert bench.run_experiment("tiny", cfg, quick=True, reuse=True)["baseline"]["reused"]
    assert torch.equal(next(model.parameters()), next(bench.trained_baseline(res, "tiny", quick=True).parameters()))


def test_run_experiment_never_deletes_outside_its_folder(bench, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    monkeypatch.setattr(bench, "run_dir", lambda name, quick=False: outside)
    with pytest.raises(RuntimeError, match="refusing"):
        bench.run_experiment("x", {"name": "x", "variants": [{"kind": "fp32"}]})
    assert (outside / "keep.txt").is_file()


def test_main_parses_sets_threads_runs_and_writes_the_report(bench, tmp_path: Path, capsys) -> None:
    seen = {}

    def run(args):
        seen["threads"] = torch.get_num_threads()
        rep = bench.Report("probe", args.quick)
        rep.row(x=1.5)
        rep.at_most("x", 1.5, 2.0)
        return rep

    before = torch.get_num_threads()
    try:
        out = tmp_path / "probe.json"
        assert bench.main(bench.parser("probe", "doc"), run, ["--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == 1
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["benchmark"] == "probe" and r["rows"] == [{"x": 1.5}] and r["goals"][0]["met"] is True
    assert "x" in capsys.readouterr().out
