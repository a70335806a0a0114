"""Data dir resolution, md5 checks, offline messages and downloads (file:// URLs stand in for mirrors)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from cimkit.data import get_spec, load_dataset, resolve_data_dir
from cimkit.data.download import RemoteFile
from cimkit.errors import DataError

MNIST_FILES = [f.name for f in get_spec("mnist").files]


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def _copy_mnist(datasets_dir: Path, dest: Path) -> Path:
    folder = dest / "mnist"
    folder.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copyfile(datasets_dir / "mnist" / name, folder / name)
    return folder


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_file_is_reported_with_md5s(
    damage: str, datasets_dir: Path, tmp_path: Path, offline: list[str]
) -> None:
    folder = _copy_mnist(datasets_dir, tmp_path)
    bad = folder / "train-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF  # same size, one byte differs
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "md5" in msg and str(bad) in msg
    assert "d53e105ee54ea40749a09fcbcd1e9432" in msg and _md5(bad) in msg  # expected and actual
    assert offline == []  # a present-but-corrupt file is reported, not silently re-downloaded
    # repaired file -> loads (the failed attempt left nothing half-loaded behind)
    shutil.copyfile(datasets_dir / "mnist" / bad.name, bad)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert len(ds.y_train) == 60000


def test_offline_missing_dataset_message(tmp_path: Path, offline: list[str]) -> None:
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    for name in MNIST_FILES:
        assert name in msg
    assert str(tmp_path / "mnist") in msg and "CIMKIT_DATA" in msg and "--data-dir" in msg
    assert "download failed" in msg and "name resolution" in msg
    # both official mirrors were tried, in order, for the first file
    first = MNIST_FILES[0]
    assert offline == [
        f"https://ossci-datasets.s3.amazonaws.com/mnist/{first}",
        f"http://yann.lecun.com/exdb/mnist/{first}",
    ]
    assert list(tmp_path.iterdir()) == []  # no partial files, not even an empty folder


def test_download_disabled_message(tmp_path: Path, offline: list[str]) -> None:
    with pytest.raises(DataError, match=r"downloads are disabled") as e:
        load_dataset("tinyshakespeare", data_dir=tmp_path, download=False)
    assert "input.txt" in str(e.value) and "\n" not in str(e.value)
    assert offline == []


def test_env_var_and_default_dir(
    datasets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    monkeypatch.setenv("CIMKIT_DATA", str(datasets_dir))
    assert resolve_data_dir() == (datasets_dir, "$CIMKIT_DATA")
    ds = load_dataset("tinyshakespeare")
    assert Path(ds.source) == datasets_dir / "tinyshakespeare"
    # explicit argument wins over the environment
    monkeypatch.setenv("CIMKIT_DATA", str(tmp_path / "empty"))
    assert load_dataset("tinyshakespeare", data_dir=datasets_dir).num_classes == 65
    with pytest.raises(DataError, match="CIMKIT_DATA") as e:
        load_dataset("tinyshakespeare")
    assert str(tmp_path / "empty" / "tinyshakespeare") in str(e.value)
    # no env var: $XDG_CACHE_HOME/cimkit, else ~/.cache/cimkit
    monkeypatch.delenv("CIMKIT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir()[0] == tmp_path / "xdg" / "cimkit"
    with pytest.raises(DataError) as e:
        load_dataset("mnist", download=False)
    assert str(tmp_path / "xdg" / "cimkit" / "mnist") in str(e.value)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir()[0] == tmp_path / "home" / ".cache" / "cimkit"


def test_data_dir_may_be_the_dataset_folder(datasets_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir=datasets_dir / "mnist")
    assert len(ds.x_test) == 10000


def _point_at(monkeypatch: pytest.MonkeyPatch, urls: list[str]) -> None:
    spec = get_spec("tinyshakespeare")
    f = spec.files[0]
    monkeypatch.setattr(spec, "files", (RemoteFile(f.name, f.md5, tuple(urls)),))


def test_download_tries_mirrors_in_order_and_verifies(
    datasets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = datasets_dir / "tinyshakespeare" / "input.txt"
    _point_at(monkeypatch, [(tmp_path / "nowhere" / "input.txt").as_uri(), good.as_uri()])
    ds = load_dataset("tinyshakespeare", data_dir=tmp_path / "data")
    dest = tmp_path / "data" / "tinyshakespeare" / "input.txt"
    assert dest.read_bytes() == good.read_bytes()
    assert Path(ds.source) == dest.parent
    ref = load_dataset("tinyshakespeare", data_dir=datasets_dir)
    assert torch.equal(ds.x_train, ref.x_train) and ds.vocab == ref.vocab
    assert [p.name for p in dest.parent.iterdir()] == ["input.txt"]  # no temp files left


def test_download_with_wrong_md5_is_rejected(
    datasets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "mirror" / "input.txt"
    bad.parent.mkdir()
    bad.write_bytes((datasets_dir / "tinyshakespeare" / "input.txt").read_bytes()[:1000])
    _point_at(monkeypatch, [bad.as_uri()])
    with pytest.raises(DataError) as e:
        load_dataset("tinyshakespeare", data_dir=tmp_path / "data", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "md5" in msg and _md5(bad) in msg and "6fb458f1232090904fb40fe944165e91" in msg
    assert not (tmp_path / "data" / "tinyshakespeare").exists()  # nothing half-downloaded
