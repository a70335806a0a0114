"""Bit packing of small integer codes into ``uint8`` payloads (TernGrad's 2-bit format and its kin).

A code of ``bits`` bits (1, 2, 4 or 8) is stored little-endian inside its byte: code ``i`` goes to
byte ``i // (8 // bits)`` at bit offset ``(i % (8 // bits)) * bits``. ``n`` codes take exactly
``ceil(n * bits / 8)`` bytes (:func:`packed_size`); the unused high bits of the last byte are zero.

TernGrad (Wen et al., NeurIPS 2017) sends ``sign(g) + 1 ∈ {0, 1, 2}`` in 2 bits, four values per
byte (the reference ``ternary_encoder`` in wenwei202/terngrad packs the same way, though its
layout within the byte differs and it always pads by 1–4 values); :func:`pack_ternary` /
:func:`unpack_ternary` are that format.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cimkit.errors import ConfigError, DataError

__all__ = ["pack_bits", "pack_ternary", "packed_size", "unpack_bits", "unpack_ternary"]

_BITS = (1, 2, 4, 8)


def _check_bits(bits: int) -> int:
    if bits not in _BITS:
        raise ConfigError(f"bits: {bits!r} is not allowed; allowed: 1, 2, 4, 8")
    return bits


def packed_size(n: int, bits: int = 2) -> int:
    """Bytes that ``n`` codes of ``bits`` bits take: ``ceil(n * bits / 8)``."""
    _check_bits(bits)
    if n < 0:
        raise ConfigError(f"n: {n!r} is out of range; allowed: integers >= 0")
    return math.ceil(n * bits / 8)


def _shifts(bits: int, device: torch.device) -> Tensor:
    per = 8 // bits
    return torch.arange(per, device=device, dtype=torch.int32) * bits  # (per,)


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack the flattened ``codes`` (integers in ``[0, 2**bits)``) into ``packed_size(n, bits)`` bytes.

    Values are not range-checked here (this sits on the gradient hot path); a code wider than
    ``bits`` corrupts its neighbours, so callers produce codes by construction.
    """
    _check_bits(bits)
    flat = codes.reshape(-1)
    n = flat.numel()
    if bits == 8:
        return flat.to(torch.uint8)
    per = 8 // bits
    pad = (-n) % per
    v = flat.to(torch.int32)
    if pad:
        v = torch.cat([v, v.new_zeros(pad)])
    v = v.view(-1, per)  # (bytes, per)
    return (v << _shifts(bits, v.device)).sum(1).to(torch.uint8)  # (bytes,) disjoint bit fields


def unpack_bits(packed: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of :func:`pack_bits`: ``(..., bytes) uint8 -> (..., n) uint8`` codes.

    Leading dimensions are kept, so a ``(world, bytes)`` stack of gathered payloads unpacks at once.
    """
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise DataError(f"unpack_bits: expected a uint8 payload, got {packed.dtype}")
    need = packed_size(n, bits)
    if packed.shape[-1] != need:
        raise DataError(f"unpack_bits: {n} codes of {bits} bits need {need} bytes, got {packed.shape[-1]}")
    if bits == 8:
        return packed.clone()
    lead = packed.shape[:-1]
    mask = (1 << bits) - 1
    v = packed.to(torch.int32).unsqueeze(-1)  # (..., bytes, 1)
    codes = (v >> _shifts(bits, packed.device)) & mask  # (..., bytes, per)
    return codes.reshape(*lead, -1)[..., :n].to(torch.uint8)  # (..., n)


def pack_ternary(t: Tensor) -> Tensor:
    """Pack a ternary tensor (values in {-1, 0, +1}, any shape) into ``ceil(numel / 4)`` bytes."""
    if t.dtype == torch.bool or (t.numel() and not bool(((t == -1) | (t == 0) | (t == 1)).all())):
        raise DataError("pack_ternary: values must be -1, 0 or +1")
    return pack_bits((t.reshape(-1).to(torch.int32) + 1), 2)


def unpack_ternary(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_ternary`: ``(..., bytes) -> (..., n)`` int8 values in {-1, 0, +1}."""
    return unpack_bits(packed, 2, n).to(torch.int8) - 1
