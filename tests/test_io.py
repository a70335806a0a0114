from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cimkit.io import atomic_write_json, load_safetensors, save_safetensors


def test_safetensors_round_trip_all_dtypes(tmp_path: Path) -> None:
    ts = {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "i64": torch.arange(7),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u8": torch.tensor([250], dtype=torch.uint8),
        "b": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
    }
    p = save_safetensors(tmp_path / "a.safetensors", ts, {"k": "v"})
    back, meta = load_safetensors(p)
    assert meta == {"k": "v"}
    for k, v in ts.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_compatible_with_reference_safetensors_package(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch", reason="reference 'safetensors' package not installed")
    ts = {"w": torch.randn(3, 2), "i": torch.arange(4, dtype=torch.int32)}
    save_safetensors(tmp_path / "ours.safetensors", ts)
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    assert all(torch.equal(theirs[k], ts[k]) for k in ts)
    st.save_file(ts, str(tmp_path / "ref.safetensors"))
    ours, _ = load_safetensors(tmp_path / "ref.safetensors")
    assert all(torch.equal(ours[k], ts[k]) for k in ts)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    p = save_safetensors(tmp_path / "a.safetensors", {"w": torch.randn(100)})
    p.write_bytes(p.read_bytes()[:-50])
    with pytest.raises(ValueError, match="truncated"):
        load_safetensors(p)


def test_atomic_json_strict_and_leaves_no_temp(tmp_path: Path) -> None:
    p = atomic_write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.5]})
    assert json.loads(p.read_text()) == {"a": None, "b": [1.5]}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_atomic_write_has_ordinary_permissions(tmp_path: Path) -> None:
    import os

    p = atomic_write_json(tmp_path / "p.json", {})
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask
