"""Cost records of BitLinear layers (the cost concern's registry, :func:`cimkit.cost.register_cost`).

A BitLinear layer (BitNet b1.58; Ma et al., "The Era of 1-bit LLMs", arXiv:2402.17764, 2024) stores
ternary weights and computes with per-token ``a_bits`` activations. Its record is the float layer's
(MACs, shapes) with ``w_bits = 2`` (a ternary code holds log2 3 ≈ 1.58 bits; stored packed, four
codes per byte), ``a_bits`` from its
:class:`~cimkit.lm.bitlinear.BitConfig`, one fp32 scale γ per matrix (or per output channel) and
BOPs = MACs · 2 · a_bits. Energies then come from the spec's arithmetic at those bits.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cimkit.cost import LayerCost, register_cost, storage_bytes
from cimkit.lm.bitlinear import BitLayer

__all__ = ["TERNARY_STORAGE_BITS"]

TERNARY_STORAGE_BITS = 2  # bits per stored ternary weight (2-bit packing)


@register_cost(BitLayer)
def _bitlinear(mod: nn.Module, cap: Any, nxt: Any) -> LayerCost:
    rec = nxt()  # the float layer's record (MACs, shapes, positions)
    cfg = mod.bit_config  # type: ignore[attr-defined]
    bias = 0 if getattr(mod, "bias", None) is None else int(mod.bias.numel())  # type: ignore[union-attr]
    scales = int(mod.weight.shape[0]) if cfg.per_channel else 1  # type: ignore[union-attr]
    rec.w_bits = TERNARY_STORAGE_BITS
    rec.a_bits = int(cfg.a_bits)
    n = int(mod.weight.numel())  # type: ignore[union-attr]
    rec.size_bytes = storage_bytes(n, TERNARY_STORAGE_BITS, bias=bias, scales=scales)
    rec.bops = rec.macs * rec.w_bits * rec.a_bits
    return rec
