"""Per-layer cost figures and the HAWQ-V2 sensitivity table Ω[layer, bits].

Ω_l(b) = (Tr(H_l) / n_l) · ||Q_b(W_l) − W_l||²₂   (Dong et al., HAWQ-V2, NeurIPS 2020, eq. 5):
the average Hessian curvature of layer l times the squared weight perturbation that quantizing it to
b bits causes — a second-order estimate of the loss increase. Units: loss (nats for cross-entropy).

Cost tables (all ``(L, B)``, additive over layers):

* weight size in bytes: ``params · b / 8``;
* BOPs per sample: ``MACs · b · a_bits`` (van Baalen et al. 2020; HAWQ-V3 Sec. 3.3);
* crossbar tiles: a callable ``tiles(layer, bits)`` or the default
  ``ceil(rows/tile_rows) · ceil(cols/tile_cols) · ceil(bits/bits_per_cell)`` with rows = fan-in
  (inputs on the word lines) and cols = output channels, i.e. bit slicing across columns of extra tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cimkit.config import check_range
from cimkit.errors import ConfigError
from cimkit.mixed._common import fake_quantize_weight, select_layers
from cimkit.mixed.hessian import HessianInfo


@dataclass(frozen=True)
class LayerInfo:
    """Static facts about one quantizable layer (MACs are per input sample)."""

    name: str
    kind: str  # "linear" | "conv1d" | "conv2d" | module class name
    weight_shape: tuple[int, ...]
    params: int
    macs: int
    rows: int  # fan-in: inputs summed per output (crossbar word lines)
    cols: int  # outputs (crossbar bit lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "weight_shape": list(self.weight_shape),
            "params": self.params,
            "macs": self.macs,
            "rows": self.rows,
            "cols": self.cols,
        }


TilesFn = Callable[[LayerInfo, int], float]


def layer_infos(model: nn.Module, example_input: torch.Tensor, layers: Sequence[str] | None = None) -> list[LayerInfo]:
    """Shapes, parameter counts and per-sample MACs of the quantizable layers (one forward pass).

    MACs = output elements per sample × fan-in (``in_features`` for Linear, ``in_ch/groups · k…``
    for convolutions); biases are not counted.
    """
    sel = select_layers(model, layers)
    out_elems: dict[str, int] = {}
    handles = []
    for name, mod in sel:

        def hook(m: nn.Module, inp: Any, out: torch.Tensor, name: str = name) -> None:
            out_elems[name] = int(out[0].numel()) if out.dim() > 1 else int(out.numel())

        handles.append(mod.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    infos = []
    for name, mod in sel:
        w = mod.weight
        cols = int(w.shape[0])
        rows = int(w[0].numel())  # fan-in per output
        if name not in out_elems:
            raise ConfigError(f"layer '{name}' was not called in a forward pass of the example input")
        kind = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}.get(type(mod), type(mod).__name__)
        infos.append(
            LayerInfo(
                name=name,
                kind=kind,
                weight_shape=tuple(int(s) for s in w.shape),
                params=int(w.numel()),
                macs=out_elems[name] * rows,
                rows=rows,
                cols=cols,
            )
        )
    return infos


def tiles_formula(
    layer: LayerInfo, bits: int, *, tile_rows: int = 256, tile_cols: int = 256, bits_per_cell: int = 1
) -> int:
    """Crossbar tiles for ``layer`` at ``bits``: ceil(rows/R)·ceil(cols/C)·ceil(bits/bits_per_cell)."""
    return math.ceil(layer.rows / tile_rows) * math.ceil(layer.cols / tile_cols) * math.ceil(bits / bits_per_cell)


@dataclass
class SensitivityTable:
    """Ω and the cost ingredients for every (layer, candidate bit width)."""

    layers: list[LayerInfo]
    bits: list[int]
    mean_trace: np.ndarray  # (L,) Tr(H_l)/n_l
    quant_error: np.ndarray  # (L, B) ||Q_b(W) − W||²
    per_channel: bool = True
    symmetric: bool = True
    observer: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def omega(self) -> np.ndarray:
        """(L, B) Ω = Tr(H)/n · ||Q_b(W) − W||²."""
        return self.mean_trace[:, None] * self.quant_error

    def size_bytes(self) -> np.ndarray:
        """(L, B) weight bytes at each candidate."""
        params = np.array([layer.params for layer in self.layers], dtype=np.float64)
        return params[:, None] * np.asarray(self.bits, dtype=np.float64)[None, :] / 8.0

    def bops(self, a_bits: int | None) -> np.ndarray:
        """(L, B) bit operations per sample with ``a_bits`` activations (None: 32-bit float)."""
        macs = np.array([layer.macs for layer in self.layers], dtype=np.float64)
        return macs[:, None] * np.asarray(self.bits, dtype=np.float64)[None, :] * float(a_bits or 32)

    def tiles(
        self, fn: TilesFn | None = None, *, tile_rows: int = 256, tile_cols: int = 256, bits_per_cell: int = 1
    ) -> np.ndarray:
        """(L, B) crossbar tiles from ``fn(layer, bits)`` or :func:`tiles_formula`."""
        if fn is None:

            def fn(layer: LayerInfo, b: int) -> float:
                return tiles_formula(layer, b, tile_rows=tile_rows, tile_cols=tile_cols, bits_per_cell=bits_per_cell)

        return np.array([[float(fn(layer, b)) for b in self.bits] for layer in self.layers])

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": list(self.bits),
            "layers": [layer.to_dict() for layer in self.layers],
            "mean_trace": self.mean_trace.tolist(),
            "quant_error": self.quant_error.tolist(),
            "omega": self.omega.tolist(),
        }


def quantization_errors(
    model: nn.Module,
    names: Sequence[str],
    bits: Sequence[int],
    *,
    per_channel: bool = True,
    symmetric: bool = True,
    observer: str | None = None,
) -> np.ndarray:
    """(L, B) table of ||Q_b(W_l) − W_l||²₂ with cimkit's weight quantizer (``observer``: the
    ``w_observer`` of the QuantConfig that will be applied; None = min/max)."""
    mods = dict(model.named_modules())
    out = np.zeros((len(names), len(bits)))
    for i, name in enumerate(names):
        w = mods[name].weight.detach()
        for j, b in enumerate(bits):
            q = fake_quantize_weight(w, int(b), per_channel=per_channel, symmetric=symmetric, observer=observer)
            out[i, j] = float(((q - w) ** 2).sum())
    return out


def sensitivity(
    model: nn.Module,
    hessian: HessianInfo,
    example_input: torch.Tensor,
    bits: Sequence[int] = (2, 3, 4, 6, 8),
    *,
    per_channel: bool = True,
    symmetric: bool = True,
    observer: str | None = None,
) -> SensitivityTable:
    """Build the Ω table for the layers in ``hessian`` (see module docstring)."""
    bits = [int(b) for b in bits]
    if not bits:
        raise ConfigError("bits: at least one candidate bit width is needed")
    for b in bits:
        check_range("bits", b, 1, 16)
    if len(set(bits)) != len(bits):
        raise ConfigError(f"bits: candidates must be distinct, got {bits}")
    infos = layer_infos(model, example_input, hessian.names)
    mt = hessian.mean_trace()
    return SensitivityTable(
        layers=infos,
        bits=bits,
        mean_trace=np.array([mt[n] for n in hessian.names], dtype=np.float64),
        quant_error=quantization_errors(
            model, hessian.names, bits, per_channel=per_channel, symmetric=symmetric, observer=observer
        ),
        per_channel=per_channel,
        symmetric=symmetric,
        observer=observer,
    )
