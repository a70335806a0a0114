"""Atomic file writes (temp file in the same folder + ``os.replace``) so a crash never leaves half a file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


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


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf -> null) atomically."""
    plain = json.loads(json.dumps(obj, default=_json_default))
    return atomic_write_text(path, json.dumps(_finite(plain), indent=indent, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- safetensors (no dependency)
# The format (https://github.com/huggingface/safetensors): 8-byte little-endian header size N, N bytes of
# JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then
# the raw little-endian tensor bytes. Reading it needs no code execution, unlike pickle.

_ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def save_safetensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """Write a dict of torch tensors in the safetensors format, atomically."""
    import torch

    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        dname = str(t.dtype).removeprefix("torch.")
        if dname not in _ST_NAMES:
            raise ValueError(f"cannot store dtype {t.dtype} of '{name}' in safetensors")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_NAMES[dname], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)  # align the data section to 8 bytes
    return atomic_write_bytes(path, len(hb).to_bytes(8, "little") + hb + b"".join(blobs))


def load_safetensors(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a safetensors file into ``(tensors, metadata)``; a malformed file raises ValueError."""
    import torch

    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"{path}: truncated safetensors header")
    try:
        header = json.loads(data[8 : 8 + n])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    meta = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n :]
    out: dict[str, Any] = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        if e > len(body) or b > e:
            raise ValueError(f"{path}: tensor '{name}' lies outside the file (truncated?)")
        dtype = getattr(torch, _ST_DTYPES[info["dtype"]])
        raw = torch.frombuffer(bytearray(body[b:e]), dtype=torch.uint8) if e > b else torch.empty(0, dtype=torch.uint8)
        out[name] = raw.view(dtype).reshape(info["shape"]).clone()
    return out, meta
