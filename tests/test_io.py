from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cimkit.errors import DataError
from cimkit.io import atomic_write_json, load_safetensors, loads_safetensors, save_safetensors, tensors_digest


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
    import safetensors.torch as st
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
    with pytest.raises(DataError, match="truncated") as e:
        load_safetensors(p)
    assert str(p) in str(e.value)
    p.write_bytes(b"\x05\x00")  # shorter than the 8-byte header size
    with pytest.raises(DataError, match=str(p)):
        load_safetensors(p)
    with pytest.raises(DataError, match="no such file"):
        load_safetensors(tmp_path / "missing.safetensors")


def _raw_file(header: dict, body: bytes) -> bytes:
    """A safetensors file written by hand, to describe tensors in ways no writer would."""
    hb = json.dumps(header).encode()
    return len(hb).to_bytes(8, "little") + hb + body


def test_unknown_dtype_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "q.safetensors"
    p.write_bytes(_raw_file({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)))
    with pytest.raises(DataError, match=r"q\.safetensors.*unknown dtype 'Q7'"):
        load_safetensors(p)


def test_shape_disagreeing_with_bytes_is_a_data_error(tmp_path: Path) -> None:
    p = tmp_path / "s.safetensors"
    # 5x3 float32 needs 60 bytes; the file holds 48 (a 4x3 tensor)
    p.write_bytes(_raw_file({"w": {"dtype": "F32", "shape": [5, 3], "data_offsets": [0, 48]}}, bytes(48)))
    with pytest.raises(DataError, match=r"s\.safetensors.*(shape|offset)"):
        load_safetensors(p)


def test_flipped_byte_fails_the_checksum(tmp_path: Path) -> None:
    p = save_safetensors(tmp_path / "a.safetensors", {"w": torch.zeros(64)}, {"k": "v"})
    data = bytearray(p.read_bytes())
    data[-5] ^= 0x40  # inside w's bytes: still a well-formed file
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        load_safetensors(p)
    with pytest.raises(DataError, match="sha256"):  # the whole-file digest a caller recorded
        load_safetensors(save_safetensors(tmp_path / "b.safetensors", {"w": torch.ones(2)}), sha256="0" * 64)


def test_digest_depends_on_names_dtypes_shapes_values_and_metadata() -> None:
    w = torch.arange(6, dtype=torch.float32)
    d = tensors_digest({"w": w}, {"a": "1"})
    assert d == tensors_digest({"w": w.clone()}, {"a": "1"})
    variants = [({"v": w}, {"a": "1"}), ({"w": w.double()}, {"a": "1"}), ({"w": w.reshape(2, 3)}, {"a": "1"}),
                ({"w": w + 1}, {"a": "1"}), ({"w": w}, {"a": "2"}), ({"w": w}, {})]  # fmt: skip
    assert all(tensors_digest(t, m) != d for t, m in variants)


def test_shared_and_strided_tensors_are_saved_independently(tmp_path: Path) -> None:
    base = torch.randn(4, 6)
    ts = {"w": base, "tied": base, "view": base[1:3], "t": base.t()}  # tied weights, a slice, a transpose
    back, meta = load_safetensors(save_safetensors(tmp_path / "a.safetensors", ts))
    assert meta == {}
    assert all(torch.equal(back[k], v) for k, v in ts.items())


def test_foreign_file_without_checksum_loads(tmp_path: Path) -> None:
    import safetensors.torch as st

    data = st.save({"w": torch.arange(3)}, metadata={"x": "y"})
    tensors, meta = loads_safetensors(data)
    assert torch.equal(tensors["w"], torch.arange(3)) and meta == {"x": "y"}


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
