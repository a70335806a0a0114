"""Atomic file writes (temp file in the same folder + ``os.replace``) so a crash never leaves half a
file, strict JSON, and safetensors files through the ``safetensors`` package with a content checksum."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from cimkit.errors import DataError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):  # Enum
        return o.value
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _finite(o: Any) -> Any:
    """Replace NaN/inf floats by None so the output is strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text (NaN/inf -> null; Paths, Enums, arrays and ``to_dict()`` objects
    converted)."""
    plain = json.loads(json.dumps(obj, default=_json_default))
    if indent is None:
        return json.dumps(_finite(plain), separators=(",", ":"), allow_nan=False)
    return json.dumps(_finite(plain), indent=indent, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf -> null) atomically."""
    return atomic_write_text(path, json_text(obj, indent=indent) + "\n")


# ----------------------------------------------------------------------------- safetensors
# The format (https://github.com/huggingface/safetensors): 8-byte little-endian header size N, N bytes of
# JSON header {name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}, then the raw
# little-endian tensor bytes. Reading it executes no code, unlike pickle. Parsing and validation
# (dtypes, shapes against byte ranges, the file fully covered) are done by the package's Rust parser;
# its errors become DataError naming the file.

CHECKSUM_KEY = "cimkit.sha256"  # metadata key: digest of the tensors and the other metadata


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    m = re.search(r"unknown variant `([^`]*)`", msg)
    if m:  # the parser lists every dtype it knows; name the culprit only
        return f"unknown dtype '{m.group(1)}'"
    return msg.removeprefix("Error while deserializing: ").removeprefix("Error while deserializing header: ")


def tensors_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """SHA-256 (hex) over every tensor's name, dtype, shape and bytes (names sorted), then the
    metadata items (sorted): equal digests mean equal contents, whatever the file layout."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    for k, v in sorted((metadata or {}).items()):
        h.update(f"\1{k}\0{v}".encode())
    return h.hexdigest()


def _independent(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two tensors sharing storage (tied weights are stored twice)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise DataError(f"safetensors: '{name}' is a {type(t).__name__}, not a tensor")
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> bytes:
    """Serialize torch tensors to safetensors bytes (with ``safetensors.torch.save``); the metadata
    (values turned into strings) gains :data:`CHECKSUM_KEY`, checked by :func:`load_safetensors`."""
    ts = _independent(tensors)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.pop(CHECKSUM_KEY, None)
    meta[CHECKSUM_KEY] = tensors_digest(ts, meta)
    try:
        return safetensors.torch.save(ts, metadata=meta)
    except (KeyError, ValueError, RuntimeError, safetensors.SafetensorError) as e:
        bad = sorted({str(t.dtype) for t in ts.values()})
        raise DataError(f"safetensors cannot store these tensors (dtypes {', '.join(bad)}): {_one_line(e)}") from None


def save_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a dict of torch tensors in the safetensors format, atomically (one rename)."""
    return atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


def loads_safetensors(data: bytes, source: str | Path = "<bytes>") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse safetensors ``data`` into ``(tensors, metadata)``; any damage raises DataError naming
    ``source``. A :data:`CHECKSUM_KEY` in the metadata is verified and removed."""
    try:
        tensors = safetensors.torch.load(data)
        n = int.from_bytes(data[:8], "little")  # the parser has validated the header already
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (safetensors.SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{source}: not a readable safetensors file ({_one_line(e)}); it is damaged or truncated") from None
    want = meta.pop(CHECKSUM_KEY, None)
    if want is not None and tensors_digest(tensors, meta) != want:
        raise DataError(f"{source}: contents do not match the checksum stored in the file; it is damaged")
    return tensors, meta


def load_safetensors(path: str | Path, *, sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file into ``(tensors, metadata)``; a missing, damaged or truncated file
    raises DataError naming it. ``sha256``: the expected hex digest of the whole file's bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({_one_line(e)})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise DataError(f"{path}: its sha256 is not the recorded {sha256}; the file was changed or damaged")
    return loads_safetensors(data, path)
