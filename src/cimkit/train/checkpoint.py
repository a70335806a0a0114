"""Checkpoints as safetensors + JSON metadata (never pickle), written atomically.

A training checkpoint holds the model's state dict, the optimizer's state (tensors in the
safetensors file, its nested structure as JSON), the torch RNG state and the loop counters, so an
interrupted :func:`cimkit.train.fit` resumes and ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimkit.io import atomic_write_json, load_safetensors, save_safetensors

_T = "__tensor__"


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


def save_model(path: str | Path, model: nn.Module, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``model.state_dict()`` to ``path`` (.safetensors) and ``metadata`` to ``path`` + ``.json``."""
    path = Path(path)
    save_safetensors(path, {k: v for k, v in model.state_dict().items()})
    atomic_write_json(path.with_suffix(path.suffix + ".json"), metadata or {})
    return path


def load_model(path: str | Path, model: nn.Module, strict: bool = True) -> dict[str, Any]:
    """Load weights saved by :func:`save_model` into ``model``; returns the JSON metadata."""
    path = Path(path)
    tensors, _ = load_safetensors(path)
    model.load_state_dict(tensors, strict=strict)
    meta = path.with_suffix(path.suffix + ".json")
    return json.loads(meta.read_text()) if meta.is_file() else {}


def save_training_state(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    counters: dict[str, Any],
) -> None:
    """Write ``state.safetensors`` then ``state.json`` (the JSON last: it marks the checkpoint complete)."""
    d = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    model_ref = _flatten(model.state_dict(), tensors, "model")
    opt_ref = _flatten(optimizer.state_dict(), tensors, "optim")
    tensors["rng.torch"] = torch.get_rng_state()
    save_safetensors(d / "state.safetensors", tensors)
    atomic_write_json(d / "state.json", {"model": model_ref, "optimizer": opt_ref, "counters": counters})


def load_training_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore model, optimizer and RNG from ``directory``; returns the counters, or None if no checkpoint."""
    d = Path(directory)
    if not (d / "state.json").is_file() or not (d / "state.safetensors").is_file():
        return None
    meta = json.loads((d / "state.json").read_text())
    tensors, _ = load_safetensors(d / "state.safetensors")
    model.load_state_dict(_unflatten(meta["model"], tensors))
    optimizer.load_state_dict(_unflatten(meta["optimizer"], tensors))
    torch.set_rng_state(tensors["rng.torch"])
    return meta["counters"]
