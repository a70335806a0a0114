"""Parsers for the on-disk dataset formats: IDX (MNIST family), CIFAR python batches, plain text.

Every parser takes bytes already read (and md5-verified) by the caller and returns numpy arrays; a
malformed payload raises :class:`~cimkit.errors.DataError` naming the file, never half a result.

The CIFAR-10 "python version" batches are Python pickles (protocol 2, written by Python 2's
cPickle) of dicts holding a ``uint8`` numpy array and lists. They are read with
:class:`SafeUnpickler`, which resolves only the few numpy globals an array needs, so a tampered
file cannot run code (``pickle.load`` would call any global the file names, e.g. ``os.system``).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from cimkit.errors import DataError

# ----------------------------------------------------------------------------- IDX

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): third byte of the magic.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def gunzip(data: bytes, what: str) -> bytes:
    """Decompress gzip ``data``; a truncated/corrupt stream raises DataError naming ``what``."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{what}: not a valid gzip file ({e}); delete it to download it again") from None


def read_idx(data: bytes, what: str, *, ndim: int | None = None) -> np.ndarray:
    """Parse an (uncompressed) IDX file: magic ``00 00 <type> <ndim>``, big-endian int32 dims, data.

    Returns a read-only view (``np.frombuffer``) in the file's dtype and shape; ``ndim`` checks the
    number of dimensions (1 for labels, 3 for images).
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{what}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype = _IDX_DTYPES[data[2]]
    nd = data[3]
    if ndim is not None and nd != ndim:
        raise DataError(f"{what}: expected an IDX file with {ndim} dimensions, found {nd}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataError(f"{what}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=nd, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise DataError(
            f"{what}: IDX payload has {len(data) - header} bytes, header {shape} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


# ----------------------------------------------------------------------------- restricted unpickler

_reconstruct: Callable[..., Any] = np.empty(0).__reduce__()[0]  # numpy's ndarray reconstructor


def _safe_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` for plain numeric/bytes types only (object dtypes would unpickle objects)."""
    dt = np.dtype(obj, align=bool(align), copy=bool(copy))
    if dt.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dt} is not allowed")
    return dt


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` at protocol 2 (latin-1 only)."""
    if not isinstance(obj, str) or encoding.replace("-", "").lower() != "latin1" or errors != "strict":
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return obj.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy < 2 and Python 2 pickles
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only resolves numpy's array/dtype reconstructors (and latin-1 bytes).

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) raises
    ``pickle.UnpicklingError``; object dtypes are refused too. Python 2 ``str`` payloads are read
    with ``encoding="latin1"`` (as torchvision does), which numpy turns back into raw array bytes.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None


def _plain_keys(obj: Any) -> Any:
    """Dict keys as ``str`` whether the pickle stored Python 2 ``str`` (latin-1) or ``bytes``."""
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def safe_unpickle(data: bytes, what: str) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`; anything refused or malformed -> DataError."""
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # any parse failure of untrusted bytes is a data error
        raise DataError(f"{what}: refused or invalid pickle ({type(e).__name__}: {e})") from None
    return _plain_keys(obj)


# ----------------------------------------------------------------------------- CIFAR-10

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_META = "batches.meta"


def _as_str(v: Any) -> str:
    return v.decode("latin1") if isinstance(v, bytes) else str(v)


def _cifar_batch(obj: Any, what: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one CIFAR batch dict -> (uint8 (N, 3, 32, 32), int64 (N,))."""
    if not isinstance(obj, dict) or "data" not in obj or "labels" not in obj:
        raise DataError(f"{what}: expected a dict with 'data' and 'labels'")
    data, labels = obj["data"], obj["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{what}: 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    if not isinstance(labels, (list, tuple, np.ndarray)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels
    ):
        raise DataError(f"{what}: 'labels' must be a list of integers")
    y = np.asarray(labels, dtype=np.int64)  # (N,)
    if len(y) != len(data):
        raise DataError(f"{what}: {len(data)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{what}: labels outside [0, {num_classes})")
    # rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 image in row-major order
    return data.reshape(-1, 3, 32, 32), y


def read_cifar10_tar(data: bytes, what: str) -> dict[str, Any]:
    """Read ``cifar-10-python.tar.gz`` bytes in memory (nothing is extracted to disk).

    Returns ``x_train`` uint8 (50000, 3, 32, 32), ``y_train`` int64, ``x_test``, ``y_test`` and
    ``classes`` (from ``batches.meta``). Batches are matched by base name inside the archive.
    """
    wanted = {*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH, CIFAR10_META}
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted and base not in members:
                    f = tf.extractfile(m)
                    if f is not None:
                        members[base] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{what}: not a valid tar.gz archive ({e})") from None
    missing = sorted(wanted - members.keys())
    if missing:
        raise DataError(f"{what}: archive lacks {', '.join(missing)}")
    meta = safe_unpickle(members[CIFAR10_META], f"{what}:{CIFAR10_META}")
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{what}:{CIFAR10_META}: expected a dict with 'label_names'")
    classes = [_as_str(n) for n in names]
    parts = [
        _cifar_batch(safe_unpickle(members[b], f"{what}:{b}"), f"{what}:{b}", len(classes))
        for b in CIFAR10_TRAIN_BATCHES
    ]
    x_test, y_test = _cifar_batch(
        safe_unpickle(members[CIFAR10_TEST_BATCH], f"{what}:{CIFAR10_TEST_BATCH}"),
        f"{what}:{CIFAR10_TEST_BATCH}",
        len(classes),
    )
    return {
        "x_train": np.concatenate([p[0] for p in parts]),  # (50000, 3, 32, 32)
        "y_train": np.concatenate([p[1] for p in parts]),  # (50000,)
        "x_test": x_test,  # (10000, 3, 32, 32)
        "y_test": y_test,  # (10000,)
        "classes": classes,
    }


# ----------------------------------------------------------------------------- text


def encode_chars(text: str) -> tuple[list[str], np.ndarray]:
    """Character-level tokenization: (vocab = sorted unique chars, int64 ids of every char)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (n_chars,) code points
    uniq, ids = np.unique(codes, return_inverse=True)
    return [chr(int(c)) for c in uniq], ids.astype(np.int64).reshape(-1)
