"""Bad inputs and faults a new user hits: each ends in one clear line (exit code 2 on the CLI, a
ConfigError/DataError naming the field in the API), never a traceback, a silent wrong result or
lost work. CLI cases run the real ``cimkit`` entry point in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cimkit import analog
from cimkit.errors import ConfigError, DataError

TINY = """name = "tiny"
dataset = "digits"
model = "small_cnn"
model_args = { width = 4 }
threads = 1
[train]
epochs = 1
"""


def cimkit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cimkit.cli", *args], capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=300)  # fmt: skip


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("cimkit: error:")]
    assert len(err) == 1, r.stderr
    for n in needles:
        assert n in err[0], err[0]
    assert "epoch" not in r.stderr  # refused before any training
    return err[0]


def _toml(tmp_path: Path, extra: str, name: str = "e.toml") -> Path:
    p = tmp_path / name
    p.write_text(TINY.replace("[train]", extra + "\n[train]"))
    return p


CASES = {
    "binary file": (lambda t: _bytes(t, b"\x89PNG\r\n\x1a\n\xff\xfe\x00"), [], ["not UTF-8"]),
    "empty file": (lambda t: _bytes(t, b"\n  \n"), [], ["is empty"]),
    "folder as file": (lambda t: t, [], ["is a folder"]),
    "repeats overflow": (lambda t: _toml(t, '[[variants]]\nkind = "analog"\nrepeats = 100000000000000000000'), [],
                         ["repeats", "64-bit"]),
    "repeats huge": (lambda t: _toml(t, '[[variants]]\nkind = "analog"\nrepeats = 10000000'), [], ["repeats"]),
    "times inf": (lambda t: _toml(t, '[[variants]]\nkind = "analog"\ntimes = [inf]'), [], ["times[0]"]),
    "negative width": (lambda t: _rewrite(_toml(t, '[[variants]]\nkind = "fp32"')), [], ["model", "width"]),
    "unknown device": (lambda t: _toml(t, '[[variants]]\nkind = "analog"\ndevice = "pcmm"'), [],
                       ["variants[0].device", "did you mean 'pcm'"]),
    "tile_rows below kernel": (lambda t: _toml(t, '[[variants]]\nkind = "analog"\nmapping_overrides = { tile_rows = 4 }'),
                               [], ["tile_rows", "variants[0]"]),
    "threads huge": (lambda t: _toml(t, '[[variants]]\nkind = "fp32"'), ["--threads", "100000"], ["threads"]),
}  # fmt: skip


def _bytes(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "bad.toml"
    p.write_bytes(data)
    return p


def _rewrite(p: Path) -> Path:
    p.write_text(p.read_text().replace("width = 4", "width = -4"))
    return p


@pytest.mark.parametrize("case", list(CASES))
def test_cli_bad_input_is_one_line_exit_2(case: str, tmp_path: Path) -> None:
    make, extra, needles = CASES[case]
    path = make(tmp_path)
    r = cimkit("run", str(path), "--out", str(tmp_path / "out"), "--no-progress", *extra)
    _one_line_error(r, *needles)


def test_cli_out_is_an_existing_file(tmp_path: Path) -> None:
    f = tmp_path / "results"
    f.write_text("x")
    _one_line_error(cimkit("run", str(_toml(tmp_path, '[[variants]]\nkind = "fp32"')), "--out", str(f)), "existing file")


def test_cli_out_cannot_be_created_or_written(tmp_path: Path) -> None:
    # /proc refuses new folders even for root: the run stops before any data is loaded
    _one_line_error(cimkit("run", str(_toml(tmp_path, '[[variants]]\nkind = "fp32"')), "--out", "/proc/cimkit-out"),
                    "--out", "cannot create")  # fmt: skip
    if os.geteuid() != 0:  # a read-only folder (root can write anywhere, so only checked as a normal user)
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            _one_line_error(cimkit("run", str(_toml(tmp_path, '[[variants]]\nkind = "fp32"')), "--out", str(ro)),
                            "not writable")  # fmt: skip
        finally:
            ro.chmod(0o755)


def test_cli_data_dir_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "data.txt"
    f.write_text("x")
    p = tmp_path / "m.toml"
    p.write_text(TINY.replace('"digits"', '"mnist"').replace("small_cnn", "mlp").replace("model_args = { width = 4 }", "")
                 + '\n[[variants]]\nkind = "fp32"\n')  # fmt: skip
    _one_line_error(cimkit("run", str(p), "--out", str(tmp_path / "o"), "--data-dir", str(f)), "is a file")


def test_two_experiments_into_one_out_are_refused(tmp_path: Path) -> None:
    from cimkit.experiment import ExperimentConfig, run_experiment
    from cimkit.experiment.outdir import OutDirLock

    a = ExperimentConfig.from_toml(TINY + '[[variants]]\nkind = "fp32"\n')
    b = a.replace(name="other", seed=1)
    out = tmp_path / "out"
    run_experiment(a, out, progress=False)
    with pytest.raises(ConfigError, match="another experiment"):
        run_experiment(b, out, progress=False)
    run_experiment(a, out, progress=False)  # the same experiment again: fine (resume/reuse)
    with OutDirLock(out), pytest.raises(ConfigError, match="another cimkit run"):  # a run in progress
        run_experiment(a, out, progress=False)


def test_nan_weights_are_not_programmed() -> None:
    net = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        analog.convert(net)
    from cimkit.quant import quantize_

    with pytest.raises(ConfigError, match="NaN"):
        quantize_(nn.Sequential(nn.Linear(4, 3)).apply(lambda m: m.weight.data.fill_(float("inf"))
                                                       if isinstance(m, nn.Linear) else None), "w8a8")  # fmt: skip


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")  # the layer under test
def test_empty_layers_are_refused_clearly() -> None:
    from cimkit.quant import quantize_

    net = nn.Sequential(nn.Linear(0, 4))
    with pytest.raises(ConfigError, match="empty weight"):
        quantize_(net, "w8a8")
    with pytest.raises(ConfigError, match="empty"):
        analog.convert(net)


def test_negative_hessian_traces_do_not_invert_the_plan() -> None:
    from cimkit.mixed import HessianInfo, sensitivity
    from cimkit.mixed.allocate import solve_ilp

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    info = HessianInfo(names=["0", "2"], params={"0": 64, "2": 32}, trace={"0": -3.96, "2": 2.0},
                       trace_stderr={"0": 1.5, "2": 0.3}, n_probes=2)  # fmt: skip
    table = sensitivity(net, info, torch.randn(2, 8), bits=[2, 4, 8])
    assert (table.omega > 0).all()
    assert all(np.all(np.diff(row) < 0) for row in table.omega)  # more bits, less sensitivity
    choice = solve_ilp(table.omega, {}, {})  # no budget: every layer at the most bits
    assert list(choice) == [2, 2]


def test_bogus_data_dir_leaves_no_empty_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cimkit.data.download as dl
    from cimkit.data import load_dataset

    def offline(url: str, timeout: float):
        raise OSError("network is unreachable")

    monkeypatch.setattr(dl, "_open_url", offline)
    bogus = tmp_path / "no" / "such" / "dir"
    with pytest.raises(DataError, match="download failed"):
        load_dataset("mnist", data_dir=bogus, progress=False)
    assert not (tmp_path / "no").exists()


def test_digits_reports_the_real_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from cimkit.data import clear_cache, load_dataset

    real = builtins.__import__

    def broken(name: str, *a, **k):  # scikit-learn is installed but one of its own imports fails
        if name.startswith("sklearn"):
            raise ImportError("libgomp.so.1: cannot open shared object file")
        return real(name, *a, **k)

    clear_cache()
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(DataError, match="libgomp") as e:
        load_dataset("digits")
    assert "needs scikit-learn" not in str(e.value)
    clear_cache()
