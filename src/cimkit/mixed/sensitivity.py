"""Per-layer cost figures and the HAWQ-V2 sensitivity table Ω[layer, bits].

Ω_l(b) = (Tr(H_l) / n_l) · ||Q_b(W_l) − W_l||²₂   (Dong et al., HAWQ-V2, NeurIPS 2020, eq. 5):
the average Hessian curvature of layer l times the squared weight perturbation that quantizing it to
b bits causes — a second-order estimate of the loss increase. Units: loss (nats for cross-entropy).

Layer facts (shapes, MACs) come from the cost model's one shape-capturing pass
(:func:`cimkit.cost.describe`). Cost tables (all ``(L, B)``, additive over layers):

* ``size_bytes``: the layer's storage quantized to ``b`` bits, by the one rule of
  :func:`cimkit.cost.storage_bytes` (weights, per-channel scales, bias, activation grid);
* BOPs per sample: ``MACs · b · a_bits`` (van Baalen et al. 2020; HAWQ-V3 Sec. 3.3);
* crossbar tiles: a callable ``tiles(layer, bits)`` or the default :func:`tiles_formula`: the row
  tiles x column blocks of the layer's real :class:`~cimkit.analog.TileGeometry` (whole input
  channels per tile, as the analog layers tile) x ``ceil(bits / bits_per_cell)`` slices;
* any other additive field of :class:`cimkit.cost.LayerCost` (energy, latency, ADC conversions, area
  ...) of the layer priced at ``b`` bits on a hardware spec (:meth:`SensitivityTable.cost`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cimkit.analog.tiling import TileGeometry
from cimkit.config import check_range
from cimkit.cost import HardwareSpec, LayerCost, describe, price_layer
from cimkit.errors import ConfigError
from cimkit.mixed._common import fake_quantize_weight, select_layers
from cimkit.mixed.hessian import HessianInfo
from cimkit.nn.adapters import standard_view
from cimkit.quant.accounting import planned_size_bytes


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
    bias: int = 0  # bias values

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "weight_shape": list(self.weight_shape),
            "params": self.params,
            "macs": self.macs,
            "rows": self.rows,
            "cols": self.cols,
            "bias": self.bias,
        }


TilesFn = Callable[[LayerInfo, int], float]


_KINDS = {"Linear": "linear", "Conv1d": "conv1d", "Conv2d": "conv2d"}


def layer_records(model: nn.Module, example_input: torch.Tensor, layers: Sequence[str] | None = None) -> list[LayerCost]:
    """The cost records (:func:`cimkit.cost.describe`, one pass of one example) of the quantizable
    layers, in ``layers`` order (default: all); a layer the pass never called is a ConfigError."""
    model = standard_view(model)  # GPT-2's Conv1D as the Linear it computes
    sel = select_layers(model, layers)
    by_name = {r.name: r for r in describe(model, example_input[:1]).records}
    out = []
    for name, _ in sel:
        rec = by_name.get(name)
        if rec is None or rec.calls == 0:
            raise ConfigError(f"layer '{name}' was not called in a forward pass of the example input")
        out.append(rec)
    return out


def _info(rec: LayerCost, mod: nn.Module) -> LayerInfo:
    bias = 0 if getattr(mod, "bias", None) is None else int(mod.bias.numel())
    kind = next((v for c in type(mod).__mro__ for k, v in _KINDS.items() if c.__name__ == k), type(mod).__name__)
    return LayerInfo(name=rec.name, kind=kind, weight_shape=tuple(rec.weight_shape), params=rec.weights,
                     macs=rec.macs, rows=rec.fan_in, cols=int(rec.weight_shape[0]), bias=bias)  # fmt: skip


def layer_infos(model: nn.Module, example_input: torch.Tensor, layers: Sequence[str] | None = None) -> list[LayerInfo]:
    """Shapes, parameter counts and per-sample MACs of the quantizable layers (the cost model's
    shape-capturing pass). MACs = output elements per sample × fan-in (``in_features`` for Linear,
    ``in_ch/groups · k…`` for convolutions); biases are not counted."""
    mods = dict(model.named_modules())
    return [_info(r, mods[r.name]) for r in layer_records(model, example_input, layers)]


def tiles_formula(
    layer: LayerInfo, bits: int, *, tile_rows: int = 256, tile_cols: int = 256, bits_per_cell: int = 1
) -> int:
    """Crossbar tiles of ``layer`` at ``bits``: the row tiles x column blocks of its
    :class:`~cimkit.analog.TileGeometry` on ``tile_rows x tile_cols`` arrays (whole input channels per
    row tile, as :class:`~cimkit.analog.AnalogLayer` tiles) x ``ceil(bits / bits_per_cell)`` slices."""
    geom = TileGeometry.of(layer.weight_shape, tile_rows, tile_cols, layer.name)
    return geom.arrays * math.ceil(bits / bits_per_cell)


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
    records: list[LayerCost] = field(default_factory=list)  # the layers' cost records (pricing at other bits)
    act_quant: bool = True  # the plan quantizes activations (their grids count in size_bytes)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def omega(self) -> np.ndarray:
        """(L, B) Ω = Tr(H)/n · ||Q_b(W) − W||²."""
        return self.mean_trace[:, None] * self.quant_error

    def size_bytes(self) -> np.ndarray:
        """(L, B) storage of each layer quantized to each candidate (:func:`cimkit.cost.storage_bytes`)."""
        return np.array([[self.layer_size(layer, b) for b in self.bits] for layer in self.layers])

    def layer_size(self, layer: LayerInfo, bits: float) -> float:
        """Storage of ``layer`` at ``bits`` (fractional allowed: the rule is linear in the weight bits)."""
        return planned_size_bytes(layer.params, layer.cols, layer.bias, bits, per_channel=self.per_channel,  # type: ignore[arg-type]
                                  symmetric=self.symmetric, act_quant=self.act_quant)  # fmt: skip

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

    def cost(self, field_name: str, spec: HardwareSpec, a_bits: int | None, *, distance_mm: float = 0.0) -> np.ndarray:
        """(L, B) additive cost field ``field_name`` of :class:`cimkit.cost.LayerCost` for each layer
        priced at each candidate on ``spec`` (``a_bits`` activations, None: the spec's), with
        interconnect wires of ``distance_mm``."""
        if not self.records:
            raise ConfigError("cost: this table has no cost records (build it with sensitivity())")
        out = np.zeros((len(self.layers), len(self.bits)))
        for i, rec in enumerate(self.records):
            for j, b in enumerate(self.bits):
                r = price_layer(rec, spec, w_bits=b, a_bits=a_bits or 32, distance_mm=distance_mm)
                out[i, j] = float(getattr(r, field_name))
        return out

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
    records = layer_records(model, example_input, hessian.names)
    mods = dict(model.named_modules())
    infos = [_info(r, mods[r.name]) for r in records]
    mt = hessian.mean_trace()
    return SensitivityTable(
        layers=infos,
        records=records,
        bits=bits,
        mean_trace=np.array([mt[n] for n in hessian.names], dtype=np.float64),
        quant_error=quantization_errors(
            model, hessian.names, bits, per_channel=per_channel, symmetric=symmetric, observer=observer
        ),
        per_channel=per_channel,
        symmetric=symmetric,
        observer=observer,
    )
