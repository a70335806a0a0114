"""File-format parsers: IDX, gzip, the restricted unpickler, CIFAR archives, character encoding."""

from __future__ import annotations

import gzip
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest

from cimkit.data import load_dataset, read_idx, safe_unpickle
from cimkit.data.formats import encode_chars, gunzip, read_cifar10_tar
from cimkit.errors import DataError


def _idx(arr: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()


def test_read_idx_round_trip_and_checks() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(_idx(img, 0x08), "img", ndim=3), img)
    ints = np.arange(-3, 4, dtype=">i4")
    np.testing.assert_array_equal(read_idx(_idx(ints, 0x0C), "ints"), ints)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(b"\x1f\x8b\x08\x03" + bytes(20), "gz.gz")  # gzip bytes passed undecompressed
    with pytest.raises(DataError, match="3 dimensions"):
        read_idx(_idx(ints, 0x0C), "ints", ndim=3)
    with pytest.raises(DataError, match="payload"):
        read_idx(_idx(img, 0x08)[:-1], "short")
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(bytes([0, 0, 8, 3, 0, 0]), "hdr")


def test_gunzip_truncated_stream() -> None:
    blob = gzip.compress(bytes(range(256)) * 100)
    assert gunzip(blob, "ok") == bytes(range(256)) * 100
    with pytest.raises(DataError, match="not a valid gzip"):
        gunzip(blob[: len(blob) // 2], "half.gz")


def test_encode_chars_reference() -> None:
    text = "héllo wörld\nhello"
    vocab, ids = encode_chars(text)
    assert vocab == sorted(set(text))
    assert "".join(vocab[i] for i in ids) == text and ids.dtype == np.int64


@pytest.mark.parametrize("style", ["py2_dumps", "py3_dumps"])
def test_safe_unpickle_numpy_batches(style: str, cifar_tools) -> None:
    dumps = getattr(cifar_tools, style)  # Python 2 cPickle style / Python 3 protocol 2
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    blob = dumps({b"data": data, b"labels": [3, 7], b"batch_label": b"x"})
    ops = {(op.name, arg) for op, arg, _ in pickletools.genops(blob)}
    if style == "py2_dumps":  # what Python 2 cPickle wrote: str opcodes, numpy.core names
        assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops and (
            "BINSTRING",
            data.tobytes().decode("latin1"),
        ) in ops
        assert not any(name in ("BINUNICODE", "BINBYTES") or arg == "_codecs encode" for name, arg in ops)
    obj = safe_unpickle(blob, "batch")
    assert set(obj) == {"data", "labels", "batch_label"}
    assert obj["data"].dtype == np.uint8 and obj["labels"] == [3, 7]
    np.testing.assert_array_equal(obj["data"], data)


class _Evil:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize(
    "payload",
    [
        "os.system",
        "builtins.eval",
        "object-dtype",
        "codecs-other",
    ],
)
def test_unpickler_refuses_code_and_objects(payload: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    if payload == "os.system":
        blob = pickle.dumps({b"data": _Evil(os.system, f"touch {marker}")}, protocol=2)
    elif payload == "builtins.eval":
        blob = pickle.dumps(_Evil(eval, f"open({str(marker)!r}, 'w')"), protocol=2)
    elif payload == "object-dtype":
        blob = pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)
    else:  # _codecs.encode is only allowed for latin-1 bytes
        blob = pickle.dumps(_Evil(__import__("_codecs").encode, "x"), protocol=2)
    with pytest.raises(DataError, match=r"refused or invalid pickle") as e:
        safe_unpickle(blob, "evil")
    assert "\n" not in str(e.value)
    assert not marker.exists()
    # the plain pickle module would have run it (shows the payload is real)
    if payload == "os.system":
        pickle.loads(blob)
        assert marker.exists()


def test_cifar_archive_with_malicious_batch(tmp_path: Path, cifar_tools) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Evil(os.system, f"touch {marker}"), b"labels": []}, protocol=2)
    archive = tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz"
    cifar_tools.write_cifar_tar(archive, replace={"data_batch_3": evil})
    cifar_tools.use_archive(archive)
    with pytest.raises(DataError, match=r"data_batch_3.*system\' is not allowed"):
        load_dataset("cifar10", data_dir=tmp_path / "data", download=False)
    assert not marker.exists()


def test_cifar_archive_structure_errors(tmp_path: Path, cifar_tools) -> None:
    p = tmp_path / "c.tar.gz"
    write_cifar_tar, py2_dumps = cifar_tools.write_cifar_tar, cifar_tools.py2_dumps
    write_cifar_tar(p, replace={"test_batch": py2_dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})})
    with pytest.raises(DataError, match=r"test_batch.*shape \(N, 3072\)"):
        read_cifar10_tar(p.read_bytes(), "c")
    write_cifar_tar(p, replace={"data_batch_2": py2_dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})})
    with pytest.raises(DataError, match=r"2 images but 1 labels"):
        read_cifar10_tar(p.read_bytes(), "c")
    with pytest.raises(DataError, match="not a valid tar.gz"):
        read_cifar10_tar(b"not an archive", "c")
    x, y, _, yt = write_cifar_tar(p, n_per_batch=3, n_test=2, dumps=cifar_tools.py3_dumps)  # bytes keys, py3 style
    arr = read_cifar10_tar(p.read_bytes(), "c")
    np.testing.assert_array_equal(arr["x_train"], x)
    np.testing.assert_array_equal(arr["y_train"], y)
    np.testing.assert_array_equal(arr["y_test"], yt)
    assert arr["classes"][1] == "automobile"
