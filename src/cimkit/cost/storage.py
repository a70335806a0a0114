"""The one definition of ``size_bytes``: what storing a layer (or a whole model) takes.

A Linear/Conv layer stores ``weights · w_bits / 8`` bytes of weights, 4 bytes per weight scale,
zero points for asymmetric grids (1 byte each up to 8 bits, else 2), 4 bytes per bias value and,
with quantized activations, the activation grid (a 4-byte scale and a 4-byte zero point). A float
layer is the same formula with 32-bit weights and no scales. Every other parameter and
floating-point buffer of the model (BatchNorm, embeddings, LayerNorm, ...) takes 4 bytes per value.
The model's ``size_bytes`` is the sum over its cost records (:mod:`cimkit.cost`), so quantized,
analog, mixed-precision and float variants are all measured with this rule.
"""

from __future__ import annotations

FLOAT_BYTES = 4

__all__ = ["FLOAT_BYTES", "storage_bytes", "values_bytes"]


def storage_bytes(weights: int, w_bits: int, *, bias: int = 0, scales: int = 0, zero_points: int = 0,
                  act_grid: bool = False) -> float:  # fmt: skip
    """Bytes of one Linear/Conv layer (module docstring): ``weights·w_bits/8 + 4·scales +
    zero_points·(1 if w_bits <= 8 else 2) + 4·bias + (8 if act_grid)``."""
    zp_bytes = 1 if w_bits <= 8 else 2
    return weights * w_bits / 8 + FLOAT_BYTES * scales + zero_points * zp_bytes + FLOAT_BYTES * bias + (
        2 * FLOAT_BYTES if act_grid else 0
    )


def values_bytes(n: int) -> float:
    """Bytes of ``n`` other floating-point values (4 each)."""
    return float(FLOAT_BYTES * n)
