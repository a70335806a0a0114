"""Fixtures for the data tests: CIFAR-10 archives written in the official format, offline network."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cimkit.data import get_spec
from cimkit.data.download import RemoteFile

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_RECONSTRUCT = np.empty(0).__reduce__()[0]


class Py2Pickler(pickle._Pickler):
    """Writes protocol-2 pickles the way Python 2's cPickle wrote the official CIFAR batches.

    Python 2 ``str`` (here: ``bytes``) becomes SHORT_BINSTRING/BINSTRING (Python 3 would emit a
    ``_codecs.encode`` call) and numpy's reconstructor is named ``numpy.core.multiarray`` as in 2009.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_py2_native_str(self, obj: str) -> None:  # e.g. numpy's dtype code 'u1' was a py2 str
        self.save_py2_str(obj.encode("latin1"))

    dispatch[str] = save_py2_native_str

    def save_global(self, obj, name=None):
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[type(_RECONSTRUCT)] = save_global


def py2_dumps(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def py3_dumps(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=2)


@dataclass
class CifarFiles:
    folder: Path  # data dir (holds cifar10/cifar-10-python.tar.gz)
    archive: Path
    x_train: np.ndarray  # (N, 3, 32, 32) uint8, in batch order
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def write_cifar_tar(
    path: Path, n_per_batch: int = 4, n_test: int = 6, seed: int = 0, dumps=py2_dumps, replace=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A cifar-10-python.tar.gz like the official one (dict batches, bytes keys, uint8 (N, 3072))."""
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    xs, ys = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        data[:, 1024:2048] //= 2  # channels differ in distribution (catches CHW mix-ups)
        labels = [int(v) for v in (np.arange(n_per_batch) + (i - 1) * n_per_batch) % 10]
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}_{k}.png".encode() for k in range(n_per_batch)],
        }
        members[f"data_batch_{i}"] = dumps(batch)
        xs.append(data)
        ys.append(labels)
    tdata = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    tlabels = [int(v) for v in np.arange(n_test) % 10]
    members["test_batch"] = dumps(
        {b"batch_label": b"testing batch 1 of 1", b"labels": tlabels, b"data": tdata,
         b"filenames": [f"t_{k}.png".encode() for k in range(n_test)]}
    )  # fmt: skip
    members["batches.meta"] = dumps(
        {b"num_cases_per_batch": n_per_batch, b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}
    )
    members["readme.html"] = b"<html></html>"
    if replace:
        members.update(replace)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    x_train = np.concatenate(xs).reshape(-1, 3, 32, 32)
    y_train = np.asarray([v for labels in ys for v in labels], dtype=np.int64)
    return x_train, y_train, tdata.reshape(-1, 3, 32, 32), np.asarray(tlabels, dtype=np.int64)


def use_archive(monkeypatch: pytest.MonkeyPatch, archive: Path) -> None:
    """Make the cifar10 spec expect this archive's md5 (the real one is c58f30...)."""
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = get_spec("cifar10")
    monkeypatch.setattr(spec, "files", (RemoteFile(spec.files[0].name, md5, spec.files[0].urls),))


@pytest.fixture
def cifar_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CifarFiles:
    archive = tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz"
    arrays = write_cifar_tar(archive)
    use_archive(monkeypatch, archive)
    return CifarFiles(tmp_path / "data", archive, *arrays)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every download attempt fails as without network; returns the URLs that were tried."""
    tried: list[str] = []

    def no_network(url: str, timeout: float):
        tried.append(url)
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr("cimkit.data.download._open_url", no_network)
    return tried


@pytest.fixture
def cifar_tools(monkeypatch: pytest.MonkeyPatch):
    """The writers above for tests (no cross-module imports between test files)."""
    import types

    return types.SimpleNamespace(
        write_cifar_tar=write_cifar_tar,
        use_archive=lambda archive: use_archive(monkeypatch, archive),
        py2_dumps=py2_dumps,
        py3_dumps=py3_dumps,
    )
