"""Weights to device codes to conductances and back: the cell mapping of :mod:`cimkit.analog.mapping`.

Shapes: tiles ``(T, R, N)`` (row tiles, rows, columns); device codes ``(S, D, T, R, N)`` with ``S``
weight slices and ``D`` devices per weight (2 for a differential pair, 1 for the offset mapping);
normalised analog weights ``A`` ``(S, T, R, N)``: what one array of slice ``s`` contributes per unit
input, in units of ``g_range``. Conductances are in µS (``PHYSICS.md``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cimkit.analog.devices import DeviceConfig
from cimkit.analog.mapping import Compensation, WeightPair, slice_codes

__all__ = ["a_from_codes", "a_from_g", "compensation_factor", "device_codes", "fold_tiles", "offset_per_unit", "readout"]


def device_codes(u: Tensor, pair: WeightPair, n_slices: int, slice_bits: int, row_mask: Tensor) -> Tensor:
    """Normalised weights ``u`` (T, R, N) in [-1, 1] -> device codes ``(S, D, T, R, N)`` in [0, 1].

    Differential: ``(max(u, 0), max(-u, 0))``; offset: ``(u + 1) / 2`` on rows that hold weights
    (padding rows stay off). Each code is then split into ``n_slices`` slices of ``slice_bits``.
    """
    if pair == WeightPair.DIFFERENTIAL:
        v = torch.stack((u.clamp(min=0.0), (-u).clamp(min=0.0)))  # (2, T, R, N)
    else:
        v = (((u + 1.0) * 0.5) * row_mask).unsqueeze(0)  # (1, T, R, N)
    return slice_codes(v.clamp(0.0, 1.0), n_slices, slice_bits)


def a_from_g(g: Tensor, pair: WeightPair, dev: DeviceConfig) -> Tensor:
    """Conductances ``(S, D, T, R, N)`` (µS) -> ``A`` (S, T, R, N): ``(G+ - G-) / g_range`` or ``G / g_range``."""
    inv = 1.0 / dev.g_range
    if pair == WeightPair.DIFFERENTIAL:
        return (g[:, 0] - g[:, 1]) * inv
    return g[:, 0] * inv


def a_from_codes(v: Tensor, pair: WeightPair, dev: DeviceConfig) -> Tensor:
    """Codes on an ideal device -> ``A`` (S, T, R, N) (what :func:`a_from_g` gives for exact conductances)."""
    if pair == WeightPair.DIFFERENTIAL:
        return v[:, 0] - v[:, 1]
    return v[:, 0] + dev.g_min / dev.g_range


def readout(a: Tensor, slice_coef: Tensor) -> Tensor:
    """Reference read for drift compensation: per column ``sum |sum_s c_s A_s|``, shape ``(N,)``."""
    w = (a * slice_coef.view(-1, 1, 1, 1)).sum(0) if a.shape[0] > 1 else a[0]  # (T, R, N)
    return torch.linalg.vector_norm(w, ord=1, dim=(0, 1))


def compensation_factor(ref: Tensor, cur: Tensor, mode: Compensation, n_out: int) -> Tensor | None:
    """Digital drift compensation ``alpha`` (N,) from a reference and a current read (Joshi et al.
    2020, aihwkit's global/column drift compensation); ``None`` for ``none``."""
    if mode == Compensation.NONE:
        return None
    if mode == Compensation.GLOBAL:
        c = cur.sum()
        a = ref.sum() / c if c > 0 else torch.ones((), device=ref.device)
        return a.expand(n_out).clone()
    return torch.where(cur > 0, ref / cur.clamp(min=1e-12), torch.ones_like(cur))


def offset_per_unit(dev: DeviceConfig) -> float:
    """Offset mapping: the digital ``sum(x)`` weight per unit ``w_scale``: ``2 g_min / g_range + 1``."""
    return 2.0 * dev.g_min / dev.g_range + 1.0


def fold_tiles(
    a: Tensor, w_scale: Tensor, alpha: Tensor | None, slice_coef: Tensor, pair: WeightPair, dev: DeviceConfig,
    row_mask: Tensor,
) -> Tensor:  # fmt: skip
    """The digital weight tiles ``(T, R, N)`` equivalent to one read ``A`` when every conversion is
    exact: shift-and-add over slices, the offset mapping's subtraction, ``w_scale`` and ``alpha``."""
    k = w_scale if alpha is None else w_scale * alpha  # (T, N)
    w = (a * slice_coef.view(-1, 1, 1, 1)).sum(0) if a.shape[0] > 1 else a[0]  # (T, R, N)
    if pair == WeightPair.OFFSET:
        w = 2.0 * w - offset_per_unit(dev) * row_mask
    return w * k.unsqueeze(1)
