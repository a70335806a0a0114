"""Checkpoints as single safetensors files (never pickle), each written with one atomic rename.

* :func:`save_model` / :func:`load_model`: a model's state dict, with the caller's JSON metadata in
  the file's ``__metadata__``.
* :func:`save_training_state` / :func:`load_training_state`: ``state.safetensors`` holds the
  model's state dict, the optimizer's state tensors, the torch RNG state and, in its
  ``__metadata__``, the nested structure of both state dicts and the loop counters as JSON. Tensors
  and counters are one file, so a crash can never pair the tensors of one epoch with the counters
  of another, and an interrupted :func:`cimkit.train.fit` resumes and ends with exactly the weights
  of an uninterrupted run.

Every file carries a checksum of its contents (:func:`cimkit.io.tensors_digest`); a missing part,
truncation, a flipped byte or a file that does not fit the model raises :class:`DataError` naming
the file, before the model or optimizer is touched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimkit.errors import DataError
from cimkit.io import json_text, load_safetensors, save_safetensors

log = logging.getLogger(__name__)

_T = "__tensor__"
MODEL_META_KEY = "cimkit.model_metadata"  # save_model: the caller's metadata, JSON
STATE_KEY = "cimkit.training_state"  # save_training_state: structure + counters, JSON
STATE_FILE = "state.safetensors"
LEGACY_STATE_JSON = "state.json"  # cimkit 0.1 kept the structure in a second file


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Replace tensors in a nested structure by references, keeping dict key types (int vs str)."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {_T: prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}  # fmt: skip
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _T in obj:
            return tensors[obj[_T]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def _check_fits(path: Path, state: dict[str, Any], model: nn.Module, strict: bool) -> None:
    """DataError unless ``state`` can be loaded into ``model`` (names and shapes), checked before
    anything is copied so that a failed load leaves the model as it was."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise DataError(f"{path}: does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in state.items():
        if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape):
            got = list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise DataError(f"{path}: tensor '{k}' has shape {got}, the model's is {list(own[k].shape)}")


def _json_field(path: Path | str, text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: its {what} is not valid JSON ({e}); the file is damaged") from None


def save_model(path: str | Path, model: nn.Module, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``model.state_dict()`` and the JSON ``metadata`` to one safetensors file, atomically."""
    meta = {MODEL_META_KEY: json_text(metadata or {}, indent=None)}
    return save_safetensors(path, dict(model.state_dict()), meta)


def load_model(path: str | Path, model: nn.Module, strict: bool = True) -> dict[str, Any]:
    """Load weights saved by :func:`save_model` into ``model``; returns the metadata.

    Raises DataError naming the file when it is missing, damaged or does not fit ``model``; the
    model is then unchanged. A file without embedded metadata (cimkit 0.1) takes it from the
    ``path.json`` file beside it, if there is one.
    """
    path = Path(path)
    tensors, raw = load_safetensors(path)
    if MODEL_META_KEY in raw:
        meta = _json_field(path, raw[MODEL_META_KEY], "metadata")
    else:
        side = path.with_suffix(path.suffix + ".json")
        meta = _json_field(side, side.read_text(encoding="utf-8", errors="replace"), "content") if side.is_file() else {}
    if not isinstance(meta, dict):
        raise DataError(f"{path}: its metadata is a {type(meta).__name__}, not a JSON object; the file is damaged")
    _check_fits(path, tensors, model, strict)
    model.load_state_dict(tensors, strict=strict)
    return meta


def save_training_state(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    counters: dict[str, Any],
) -> Path:
    """Write ``directory/state.safetensors``: tensors, structure and counters in one atomic file."""
    d = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    model_ref = _flatten(model.state_dict(), tensors, "model")
    opt_ref = _flatten(optimizer.state_dict(), tensors, "optim")
    tensors["rng.torch"] = torch.get_rng_state()
    state = {"model": model_ref, "optimizer": opt_ref, "counters": counters}
    path = save_safetensors(d / STATE_FILE, tensors, {STATE_KEY: json_text(state, indent=None)})
    (d / LEGACY_STATE_JSON).unlink(missing_ok=True)  # a cimkit 0.1 leftover would only mislead a reader
    return path


def _counters(path: Path, state: Any) -> dict[str, Any]:
    c = state.get("counters") if isinstance(state, dict) else None
    if not isinstance(c, dict):
        raise DataError(f"{path}: the training state has no counters; the file is damaged")
    for k in ("epoch", "step"):
        if not isinstance(c.get(k), int) or isinstance(c.get(k), bool) or c[k] < 0:
            raise DataError(f"{path}: counter '{k}' is {c.get(k)!r}, not a non-negative integer; the file is damaged")
    if not isinstance(c.get("history", []), list):
        raise DataError(f"{path}: counter 'history' is not a list; the file is damaged")
    return c


def load_training_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore model, optimizer and RNG from ``directory``; returns the counters, or None if there
    is no checkpoint.

    Raises DataError naming the file when the checkpoint is damaged, truncated, does not fit the
    model or optimizer, or is a cimkit 0.1 two-file checkpoint (whose parts cannot be verified to
    belong together); model, optimizer and RNG are then unchanged.
    """
    d = Path(directory)
    path = d / STATE_FILE
    if not path.is_file():
        return None
    tensors, raw = load_safetensors(path)
    if STATE_KEY not in raw:
        raise DataError(f"{path}: a checkpoint without its training state inside (written by cimkit 0.1, or "
                        f"damaged); its parts cannot be verified to belong together")  # fmt: skip
    state = _json_field(path, raw[STATE_KEY], "training state")
    counters = _counters(path, state)
    try:
        model_sd = _unflatten(state["model"], tensors)
        opt_sd = _unflatten(state["optimizer"], tensors)
        rng = tensors["rng.torch"]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: the training state refers to a missing tensor ({e}); the file is damaged") from None
    if rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        raise DataError(f"{path}: the stored RNG state has dtype {rng.dtype} and shape {list(rng.shape)}; the file is damaged")
    if not isinstance(model_sd, dict) or not isinstance(opt_sd, dict):
        raise DataError(f"{path}: the training state is malformed; the file is damaged")
    _check_fits(path, model_sd, model, strict=True)
    try:  # the optimizer checks its parameter groups before it changes anything
        optimizer.load_state_dict(opt_sd)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: the optimizer state does not fit this optimizer ({e})") from None
    model.load_state_dict(model_sd)
    torch.set_rng_state(rng)
    return counters
