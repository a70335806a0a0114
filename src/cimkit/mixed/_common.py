"""Helpers shared by the mixed-precision modules: which layers, which batches, which quantizer.

The quantization package (:mod:`cimkit.quant`) is used when it is importable; the fallbacks here
(leaf ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` layers, symmetric per-channel uniform rounding) follow
the same conventions so Ω tables computed either way agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from cimkit.errors import ConfigError, DataError

log = logging.getLogger("cimkit.mixed")

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_LEAF_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the layers a bit width can be chosen for (weights of Linear/Conv)."""
    try:
        from cimkit.quant import quantizable_layers as q_layers
    except ImportError:
        q_layers = None
    if q_layers is not None:
        return list(q_layers(model))
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _LEAF_TYPES)]


def select_layers(model: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """The quantizable layers, or the named subset ``layers`` (unknown names -> ConfigError)."""
    found = quantizable_layers(model)
    if layers is None:
        if not found:
            raise ConfigError("model has no quantizable layers (nn.Linear / nn.Conv1d / nn.Conv2d)")
        return found
    by_name = dict(found)
    out = []
    for name in layers:
        if name not in by_name:
            from cimkit.errors import unknown

            raise unknown("layer", name, by_name)
        out.append((name, by_name[name]))
    return out


def fake_quantize_weight(
    w: torch.Tensor,
    bits: int,
    per_channel: bool = True,
    symmetric: bool = True,
    observer: str | None = None,
) -> torch.Tensor:
    """Q_b(W): quantize-dequantize ``w`` to ``bits`` exactly as a cimkit quantized layer would.

    With :mod:`cimkit.quant` present this is its ``WeightQuantizer`` for
    ``QuantConfig(w_bits=bits, per_channel, w_symmetric=symmetric, w_observer=observer)``, so Ω uses
    the grid that ``quantize_`` will apply (min/max, MSE or percentile ranges). Fallback (min/max
    only): symmetric narrow grid with 2^(b-1)-1 positive levels, scale = max|w| per output channel
    (dim 0) or per tensor; asymmetric: min/max affine grid with 2^b levels.
    """
    try:
        from cimkit.quant.config import QuantConfig
        from cimkit.quant.quantizers import WeightQuantizer
    except ImportError:
        WeightQuantizer = None
    if WeightQuantizer is not None:
        cfg = QuantConfig(w_bits=int(bits), a_bits=None, per_channel=per_channel, w_symmetric=symmetric,
                          w_observer=observer)  # fmt: skip
        with torch.no_grad():
            return WeightQuantizer(cfg, w)(w.detach())
    if observer not in (None, "minmax"):
        raise ConfigError(f"w_observer {observer!r} needs cimkit.quant; without it only 'minmax' is available")
    w2 = w.detach().reshape(w.shape[0], -1) if per_channel else w.detach().reshape(1, -1)  # (C, K)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = w2.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax  # (C, 1)
        q = torch.clamp(torch.round(w2 / scale), -qmax, qmax) * scale
    else:
        lo = w2.amin(dim=1, keepdim=True)
        hi = w2.amax(dim=1, keepdim=True)
        scale = ((hi - lo) / (2**bits - 1)).clamp_min(1e-12)  # (C, 1)
        zp = torch.round(-lo / scale)
        q = (torch.clamp(torch.round(w2 / scale) + zp, 0, 2**bits - 1) - zp) * scale
    return q.reshape(w.shape)


def _split(x: torch.Tensor, y: torch.Tensor | None, batch_size: int) -> list[tuple[torch.Tensor, Any]]:
    n = x.shape[0]
    return [(x[i : i + batch_size], None if y is None else y[i : i + batch_size]) for i in range(0, n, batch_size)]


def as_batches(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int = 128,
    max_samples: int | None = None,
    device: torch.device | str = "cpu",
) -> list[Batch]:
    """Normalize ``data`` to a list of ``(x, y)`` batches on ``device``.

    ``data`` may be an iterable of ``(x, y)`` pairs (a data loader), an input tensor (distilled data:
    labels are the model's own predictions), an ``(x, y)`` tuple of tensors, or an iterable of input
    tensors. At most ``max_samples`` samples are taken (the last batch is cut to fit).
    """
    if data is None:
        raise DataError("no data given (pass a loader, an (x, y) pair, an input tensor, or distilled data)")
    if isinstance(data, torch.Tensor):
        pairs = _split(data, None, batch_size)
    elif (
        isinstance(data, tuple)
        and len(data) == 2
        and isinstance(data[0], torch.Tensor)
        and isinstance(data[1], torch.Tensor)
        and data[0].shape[0] == data[1].shape[0]
    ):
        pairs = _split(data[0], data[1], batch_size)
    elif isinstance(data, Iterable):
        pairs = data
    else:
        raise DataError(f"cannot take batches from {type(data).__name__}")
    out: list[Batch] = []
    taken = 0
    for item in pairs:
        if isinstance(item, torch.Tensor):
            x, y = item, None
        elif isinstance(item, (tuple, list)) and len(item) >= 1:
            x, y = item[0], (item[1] if len(item) > 1 else None)
        else:
            raise DataError(f"a batch must be a tensor or an (x, y) pair, got {type(item).__name__}")
        if max_samples is not None:
            room = max_samples - taken
            if room <= 0:
                break
            x = x[:room]
            y = None if y is None else y[:room]
        x = x.to(device)
        if y is None:
            was = model.training
            model.eval()
            with torch.no_grad():
                y = model(x).argmax(dim=1)  # (B,) the model's own labels
            model.train(was)
        out.append((x, y.to(device)))
        taken += x.shape[0]
    if not out:
        raise DataError("data gave no batches")
    return out
