"""The quantization handler of the cost model, and ``account``: bits, size, MACs and BOPs of a model.

A quantized layer prices itself through the cost model's registry (:func:`cimkit.cost.register_cost`):
its record is its float layer's (MACs, positions, shapes) with the weight and activation bits of
its quantizers and its storage by the one rule of :func:`cimkit.cost.storage_bytes` (weights at
``w_bits``, a 4-byte scale per channel or per tensor, zero points for asymmetric grids, 4-byte
biases, an 8-byte activation grid with quantized inputs).

:func:`account` is the quantization view of :func:`cimkit.cost.describe` (the same shape-capturing
pass and records; per input sample; float layers count as 32-bit weights and activations):

* ``macs``: multiply-accumulates of the Linear/Conv layers (``out_elements · in_features`` or
  ``out_elements · in_channels/groups · kernel_size``); pooling, BN, activations are not counted.
* ``bops``: bit operations ``macs · w_bits · a_bits`` (Baskin et al. 2021, "UNIQ"; van Baalen et
  al. 2020, "Bayesian Bits"), with ``a_bits = 32`` for float inputs.
* ``size_bytes``: the sum of every record's storage: the Linear/Conv layers as above, every other
  parameter and floating-point buffer (BatchNorm, embeddings, ...) at 4 bytes per value.
* ``weight_bits`` (total): Σ weights · w_bits over the Linear/Conv layers (biases excluded);
  ``avg_w_bits`` is that over the number of weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cimkit.cost import describe, register_cost, storage_bytes
from cimkit.cost.capture import Captured
from cimkit.cost.record import LayerCost
from cimkit.quant.layers import QuantLayer

FLOAT_BITS = 32

__all__ = ["FLOAT_BITS", "CostReport", "account", "planned_size_bytes", "quant_layer_size"]


@dataclass
class CostReport:
    """``layers``: one dict per Linear/Conv layer (``name, type, w_bits, a_bits, params, weights,
    macs, bops, size_bytes``); ``total``: ``params, weights, size_bytes, float_size_bytes,
    compression, macs, bops, weight_bits, avg_w_bits``."""

    layers: list[dict[str, Any]] = field(default_factory=list)
    total: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "total": self.total}

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Headers and rows (per layer, then the total) for printing or HTML."""
        headers = ["layer", "type", "W bits", "A bits", "params", "MACs", "BOPs", "size (B)"]
        rows: list[list[Any]] = [
            [r["name"], r["type"], r["w_bits"], r["a_bits"], r["params"], r["macs"], r["bops"], r["size_bytes"]]
            for r in self.layers
        ]
        t = self.total
        rows.append(["total", "", f"{t['avg_w_bits']:.2f} avg", "", t["params"], t["macs"], t["bops"], t["size_bytes"]])
        return headers, rows


def planned_size_bytes(weights: int, out_channels: int, bias: int, w_bits: int, *, per_channel: bool = True,
                       symmetric: bool = True, act_quant: bool = True) -> float:  # fmt: skip
    """Storage of a layer quantized to ``w_bits`` (the rule of :func:`cimkit.cost.storage_bytes`):
    for plans of layers that are not quantized yet (mixed precision's cost tables)."""
    scales = out_channels if per_channel else 1
    return storage_bytes(weights, w_bits, bias=bias, scales=scales, zero_points=0 if symmetric else scales,
                         act_grid=act_quant)  # fmt: skip


def quant_layer_size(mod: QuantLayer) -> float:
    """Storage of a quantized layer (module docstring)."""
    w = mod.weight
    wq = mod.w_quant
    bias = 0 if getattr(mod, "bias", None) is None else int(mod.bias.numel())  # type: ignore[attr-defined]
    scales = int(wq.zero_point.numel())  # one grid per channel, per tensor or per (row, group)
    return storage_bytes(int(w.numel()), wq.bits, bias=bias, scales=scales, zero_points=0 if wq.symmetric else scales,
                         act_grid=mod.a_quant is not None)  # fmt: skip


@register_cost(QuantLayer)
def _quantized(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    rec = nxt()  # the float layer's record (MACs, shapes, positions)
    rec.w_bits = int(mod.w_quant.bits)  # type: ignore[union-attr]
    rec.a_bits = FLOAT_BITS if mod.a_quant is None else int(mod.a_quant.bits)  # type: ignore[union-attr]
    rec.size_bytes = quant_layer_size(mod)  # type: ignore[arg-type]
    rec.bops = rec.macs * rec.w_bits * rec.a_bits
    return rec


@torch.no_grad()
def account(model: nn.Module, example_input: torch.Tensor) -> CostReport:
    """Cost of ``model`` for one sample, from one shape-capturing pass of ``example_input`` (any
    batch size; figures are divided by it). No state changes (quantizers do not observe)."""
    records = describe(model, example_input).records
    rows = []
    for r in records:
        if r.op not in ("linear", "conv"):
            continue
        rows.append({
            "name": r.name, "type": r.type, "w_bits": r.w_bits, "a_bits": r.a_bits, "params": r.params,
            "weights": r.weights, "macs": int(r.macs), "bops": int(r.bops), "size_bytes": float(r.size_bytes),
        })  # fmt: skip
    weights = sum(r["weights"] for r in rows)
    weight_bits = sum(r["weights"] * r["w_bits"] for r in rows)
    size = sum(r.size_bytes for r in records)
    float_size = sum(4.0 * r["params"] for r in rows) + sum(r.size_bytes for r in records if r.op not in ("linear", "conv"))
    total = {
        "params": int(sum(r.params for r in records)), "weights": int(weights), "size_bytes": float(size),
        "float_size_bytes": float(float_size), "compression": float(float_size / size) if size else 1.0,
        "macs": int(sum(r["macs"] for r in rows)), "bops": int(sum(r["bops"] for r in rows)),
        "weight_bits": int(weight_bits), "avg_w_bits": weight_bits / weights if weights else 0.0,
    }  # fmt: skip
    return CostReport(rows, total)
