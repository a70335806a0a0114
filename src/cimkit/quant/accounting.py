"""What a (quantized or float) model costs: per-layer and total weight bits, size, MACs and BOPs.

Definitions (per input sample; float layers count as 32-bit weights and activations):

* ``macs``: multiply-accumulates of the Linear/Conv layers (``out_elements · in_features`` or
  ``out_elements · in_channels/groups · kernel_size``); pooling, BN, activations are not counted.
* ``bops``: bit operations ``macs · w_bits · a_bits`` (Baskin et al. 2021, "UNIQ"; van Baalen et
  al. 2020, "Bayesian Bits"), with ``a_bits = 32`` for float inputs.
* ``size_bytes`` of a layer: ``weights · w_bits / 8`` + weight scales (4 bytes each) + weight zero
  points (asymmetric grids only: 1 byte each up to 8 bits, else 2) + bias (4 bytes each) +
  activation grid (4-byte scale + 4-byte zero point). The model total adds every other parameter
  and floating-point buffer (BatchNorm, embeddings, ...) at 4 bytes per value.
* ``weight_bits`` (total): Σ weights · w_bits over the Linear/Conv layers (biases excluded);
  ``avg_w_bits`` is that over the number of weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cimkit.quant.api import quantizable_layers
from cimkit.quant.layers import QuantLayer
from cimkit.quant.quantizers import ActQuantizer, WeightQuantizer

FLOAT_BITS = 32


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


def _layer_size(mod: nn.Module) -> tuple[int, int, float]:
    """``(w_bits, a_bits, size_bytes)`` of one layer."""
    w = mod.weight
    bias = 0 if mod.bias is None else mod.bias.numel()
    if not isinstance(mod, QuantLayer):
        return FLOAT_BITS, FLOAT_BITS, (w.numel() + bias) * FLOAT_BITS / 8
    wq = mod.w_quant
    n_scales = int(wq.zero_point.numel())  # one grid per channel, per tensor or per (row, group)
    size = w.numel() * wq.bits / 8 + n_scales * 4 + bias * 4
    if not wq.symmetric:
        size += n_scales * (1 if wq.bits <= 8 else 2)
    a_bits = FLOAT_BITS
    if mod.a_quant is not None:
        a_bits = mod.a_quant.bits
        size += 8
    return wq.bits, a_bits, size


@torch.no_grad()
def account(model: nn.Module, example_input: torch.Tensor) -> CostReport:
    """Cost of ``model`` for one sample, from one forward pass of ``example_input`` (any batch size;
    figures are divided by it). Quantizers are bypassed during the pass (no state changes)."""
    layers = quantizable_layers(model)
    shapes: dict[str, tuple[torch.Size, torch.Size]] = {}
    hooks = []
    for name, mod in layers:
        hooks.append(mod.register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, (i[0].shape, o.shape))))  # fmt: skip
    acts = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    for a in acts:
        a.bypass = True
    was = model.training
    model.eval()
    try:
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(example_input.to(dev))
    finally:
        for h in hooks:
            h.remove()
        for a in acts:
            a.bypass = False
        model.train(was)
    batch = int(example_input.shape[0]) if example_input.dim() > 0 else 1
    rows = []
    counted: set[int] = set()
    for name, mod in layers:
        w = mod.weight
        counted.update({id(w)} | ({id(mod.bias)} if mod.bias is not None else set()))
        params = w.numel() + (0 if mod.bias is None else mod.bias.numel())
        if name in shapes:
            _, out_shape = shapes[name]
            per_out = w[0].numel()  # in_features, or in_channels/groups · kernel elements
            macs = math.prod(out_shape) // max(batch, 1) * per_out
        else:
            macs = 0  # layer not reached by the forward pass
        w_bits, a_bits, size = _layer_size(mod)
        rows.append({
            "name": name, "type": type(mod).__name__, "w_bits": w_bits,
            "a_bits": a_bits, "params": params, "weights": w.numel(), "macs": int(macs),
            "bops": int(macs) * w_bits * a_bits, "size_bytes": float(size),
        })  # fmt: skip
    qparams = _quantizer_param_ids(model)
    other = sum(p.numel() for p in model.parameters() if id(p) not in counted and id(p) not in qparams)
    other += sum(b.numel() for n, b in model.named_buffers() if b.is_floating_point() and not _in_quantizer(n))
    weights = sum(r["weights"] for r in rows)
    weight_bits = sum(r["weights"] * r["w_bits"] for r in rows)
    size = sum(r["size_bytes"] for r in rows) + other * 4
    params = sum(p.numel() for p in model.parameters() if id(p) not in qparams)
    float_size = 4 * (sum(r["params"] for r in rows) + other)
    total = {
        "params": int(params), "weights": int(weights), "size_bytes": float(size),
        "float_size_bytes": float(float_size), "compression": float(float_size / size) if size else 1.0,
        "macs": int(sum(r["macs"] for r in rows)), "bops": int(sum(r["bops"] for r in rows)),
        "weight_bits": int(weight_bits), "avg_w_bits": weight_bits / weights if weights else 0.0,
    }  # fmt: skip
    return CostReport(rows, total)


def _in_quantizer(buffer_name: str) -> bool:
    """Quantizer buffers (scales, flags) are counted with their layer, not as 'other' values."""
    parts = buffer_name.split(".")
    return "w_quant" in parts or "a_quant" in parts


def _quantizer_param_ids(model: nn.Module) -> set[int]:
    """LSQ step sizes are quantizer parameters, not model parameters."""
    out: set[int] = set()
    for m in model.modules():
        if isinstance(m, (ActQuantizer, WeightQuantizer)):
            out.update(id(p) for p in m.parameters(recurse=False))
    return out
