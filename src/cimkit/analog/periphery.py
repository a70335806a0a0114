"""Analog periphery primitives: symmetric range quantizers (DAC/ADC) with an STE, noise tables.

The quantizer is ``q(x) = r * round(clamp(x / r, -1, 1) * L) / L`` with ``L = 2^(bits-1) - 1``
levels per sign (so ``2^bits - 1`` levels in all, aihwkit's ``inp_res = out_res = 1/(2^bits - 2)``).
Its gradient is the straight-through estimator inside the range (1) and 0 outside; the gradient
with respect to a learned range ``r`` is LSQ's (Esser et al., ICLR 2020):
``(q(x) - x) / r`` inside and ``sign(x)`` outside, scaled by ``1 / sqrt(n * L)``.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

from cimkit import native

__all__ = [
    "abs_percentile",
    "adc_combine",
    "adc_combine_rk",
    "bits_levels",
    "dynamic_dac_codes",
    "gaussian_noise",
    "noise_offset",
    "range_quantize",
    "table",
]

_TABLE_SIZE = 1 << 24  # floats in the shared Gaussian table (64 MiB)
_TABLES: dict[tuple[str, int | None, torch.dtype], Tensor] = {}
_offsets = threading.local()  # one reused int64 element per thread for the table offsets
_TABLE_SEED = 0x5EED_C1A0


def bits_levels(bits: int) -> int:
    """Levels per sign of a symmetric ``bits``-bit converter: ``2^(bits-1) - 1``."""
    return (1 << (bits - 1)) - 1


class _RangeQuant(torch.autograd.Function):
    """``round(clamp(x/r, -1, 1) L)`` times ``r/L`` (``out='value'``), ``1/L`` (``'normalized'``) or 1
    (``'codes'``); STE for x, LSQ for r (value output only).

    Only ``x`` and ``r`` are saved (``x`` is usually kept alive by the graph anyway); the clip mask
    and the LSQ terms are recomputed in the backward pass.
    """

    @staticmethod
    def forward(ctx, x: Tensor, r: Tensor, levels: int, learn_r: bool, out: str, clip: bool):  # type: ignore[override]
        y = x * (levels / r)
        if clip:
            y.clamp_(-levels, levels)
        y.round_()
        if out == "value":
            y.mul_(r / levels)
        elif out == "normalized":
            y.mul_(1.0 / levels)
        ctx.save_for_backward(x, r)
        ctx.levels, ctx.learn_r, ctx.out, ctx.clip = levels, learn_r, out, clip
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):  # type: ignore[override]
        x, r = ctx.saved_tensors
        scale = None if ctx.out == "value" else (1.0 / r if ctx.out == "normalized" else ctx.levels / r)
        if not ctx.clip:  # e.g. a per-sample abs-max range: nothing is ever clipped
            gx = gy if scale is None else gy * scale
        else:
            rf = float(r)
            gx = torch.ops.aten.hardtanh_backward(gy, x, -rf, rf)  # STE: 0 outside the range (one fused op)
            if scale is not None:
                gx.mul_(scale)
        gr = None
        if ctx.learn_r:
            s = x / r
            q = torch.round(s.clamp(-1.0, 1.0) * ctx.levels) / ctx.levels
            dr = torch.where(s.abs() <= 1.0, q - s, torch.sign(s))
            n_per_sample = max(x[0].numel(), 1) if x.dim() > 1 else max(x.numel(), 1)
            gr = ((gy * dr).sum() / math.sqrt(n_per_sample * ctx.levels)).reshape(r.shape)
        return gx, gr, None, None, None, None


def range_quantize(
    x: Tensor, r: Tensor, levels: int, *, learn_range: bool = False, out: str = "value", clip: bool = True
) -> Tensor:
    """Differentiable symmetric quantizer (STE; LSQ gradient for ``r`` when ``learn_range``).

    ``r`` is a scalar tensor (or broadcastable to ``x``). ``out``: ``value`` (units of ``x``),
    ``normalized`` (divided by ``r``) or ``codes`` (integers in ``[-levels, levels]``); only
    ``value`` can learn ``r``. ``clip=False`` skips the clamp when ``|x| <= r`` holds by construction
    (a per-sample abs-max range).
    """
    if out not in ("value", "normalized", "codes"):
        raise ValueError(f"range_quantize: out={out!r}; allowed: value, normalized, codes")
    if out != "value" and learn_range:
        raise ValueError("range_quantize: a learned range needs out='value'")
    return _RangeQuant.apply(x, r, levels, learn_range, out, clip)


class _DynamicDacCodes(torch.autograd.Function):
    """Per-sample abs-max DAC codes in one native pass (:func:`cimkit.native.dac_rows`);
    the gradient is the STE's ``levels / r`` per sample (nothing clips), as :class:`_RangeQuant`
    with ``out='codes', clip=False`` gives it, to the bit. Saves only the ranges."""

    @staticmethod
    def forward(ctx, x: Tensor, levels: int):  # type: ignore[override]
        q = torch.empty_like(x)
        r = native.dac_rows(x.view(x.shape[0], -1), q.view(x.shape[0], -1), levels)  # (B,)
        ctx.save_for_backward(r)
        ctx.levels = levels
        ctx.mark_non_differentiable(r)
        return q, r

    @staticmethod
    def backward(ctx, gq: Tensor, gr: Tensor | None):  # type: ignore[override]
        (r,) = ctx.saved_tensors
        g2 = gq.reshape(gq.shape[0], -1)
        if native.usable(g2):
            return native.row_scale(g2, r, ctx.levels).view(gq.shape), None
        return gq * (ctx.levels / r).view(-1, *([1] * (gq.dim() - 1))), None


def dynamic_dac_codes(x: Tensor, levels: int) -> tuple[Tensor, Tensor]:
    """Differentiable per-sample abs-max DAC: integer codes like ``x`` and the ranges ``r`` (B,),
    the same as ``r = max|x_b|`` (at least 1e-12) and ``range_quantize(x, r, levels, out='codes',
    clip=False)``. Needs the native kernels (:func:`cimkit.native.usable`)."""
    return _DynamicDacCodes.apply(x, levels)


class _AdcCombine(torch.autograd.Function):
    """``y = bias + f * codes`` with the ADC's straight-through gradient (training path).

    ``codes`` are the partial sums already converted in place (see :func:`adc_combine`); the
    gradient passes where the code is not at full scale (the top half-LSB counts as clipped).
    With ``in_place`` (no code at full scale, no gradient for ``f``: the backward needs neither
    the codes nor a mask) ``y`` is written over ``codes``, which saves a full-size output.
    """

    @staticmethod
    def forward(ctx, codes, levels, f, bias, saturated, in_place):  # type: ignore[override]
        if in_place:
            y = codes.mul_(f)
            if bias is not None:
                y.add_(bias)
            ctx.mark_dirty(codes)
            ctx.save_for_backward(f)
        else:
            y = torch.addcmul(bias, codes, f) if bias is not None else codes * f
            ctx.save_for_backward(codes, f)
        ctx.levels, ctx.saturated, ctx.in_place = levels, saturated, in_place
        ctx.bias_shape = bias.shape if bias is not None else None
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        if ctx.in_place:
            (f,) = ctx.saved_tensors
            codes = None
        else:
            codes, f = ctx.saved_tensors
        gz = gf = gb = None
        if ctx.needs_input_grad[0]:
            if ctx.saturated:
                gz = torch.ops.aten.hardtanh_backward(gy, codes, -float(ctx.levels), float(ctx.levels)).mul_(f)
            else:  # no code at full scale: the mask is all ones
                gz = gy * f
        if ctx.needs_input_grad[2]:
            gf = _sum_to(gy * codes, f.shape)
        if ctx.bias_shape is not None and ctx.needs_input_grad[3]:
            gb = _sum_to(gy, ctx.bias_shape)
        return gz, None, gf, gb, None, None


def _sum_to(x: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    dims = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape)) if b == 1 and a != 1)
    return x.sum(dim=dims, keepdim=True) if dims else x


def adc_combine(z: Tensor, noise: Tensor | None, sigma: float, levels: int, f: Tensor, bias: Tensor | None) -> Tensor:
    """Differentiable ``bias + f * round(clamp(z + sigma * noise, -levels, levels))`` for ``z`` in ADC
    units (``f`` broadcasts over ``z``: ``(B|1, N, 1, ...)``; ``bias`` is ``(N,)``).

    ``z`` must be a fresh result the caller owns (a convolution or matmul output that nothing saved
    for backward): it is converted **in place** (through a detached alias, so no copy is made) and
    the gradient reaches it by the straight-through estimator.
    """
    zd = z.detach()
    if noise is not None:
        zd.add_(noise, alpha=sigma)
    zd.clamp_(-levels, levels).round_()
    saturated = bool(torch.maximum(zd.amax(), zd.amin().neg()) >= levels)  # two passes, no allocation
    bias_v = bias.view(1, -1, *([1] * (z.dim() - 2))) if bias is not None else None
    in_place = not saturated and not f.requires_grad and z._base is None
    return _AdcCombine.apply(z, levels, f, bias_v, saturated, in_place)


class _AdcCombineRK(torch.autograd.Function):
    """:class:`_AdcCombine` with the digital factor ``f[b, n] = (r[b] k[n]) / gain`` computed on the
    fly by the native kernels (never materialised, the same bits); ``f`` takes no gradient."""

    @staticmethod
    def forward(ctx, codes, levels, r, k, inv, bias, saturated, in_place):  # type: ignore[override]
        if in_place:
            y = native.col_scale(codes, r, k, inv, bias, native.COL_MUL_ADD if bias is not None else native.COL_MUL,
                                 out=codes)  # fmt: skip
            ctx.mark_dirty(codes)
            ctx.save_for_backward(r, k)
        else:
            y = native.col_scale(codes, r, k, inv, bias, native.COL_FMA if bias is not None else native.COL_MUL,
                                 out=torch.empty_like(codes))  # fmt: skip
            ctx.save_for_backward(r, k, codes)
        ctx.levels, ctx.inv, ctx.saturated, ctx.in_place = levels, inv, saturated, in_place
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        r, k, *rest = ctx.saved_tensors
        gz = gb = None
        gy = gy.contiguous()
        if ctx.needs_input_grad[0]:
            if ctx.saturated:
                gz = native.col_scale(gy, r, k, ctx.inv, None, native.COL_STE, out=torch.empty_like(gy),
                                      codes=rest[0], levels=ctx.levels)  # fmt: skip
            else:
                gz = native.col_scale(gy, r, k, ctx.inv, None, native.COL_MUL, out=torch.empty_like(gy))
        if ctx.has_bias and ctx.needs_input_grad[5]:
            gb = gy.sum(dim=(0, *range(2, gy.dim())))  # (N,)
        return gz, None, None, None, None, gb, None, None


def adc_combine_rk(z: Tensor, noise: Tensor | None, sigma: float, levels: int, r: Tensor, k: Tensor, inv: float,
                   bias: Tensor | None) -> Tensor:  # fmt: skip
    """:func:`adc_combine` with ``f = (r[:, None] * k[None, :]) * inv`` (``r`` (B,) or 0-d, ``k`` (N,),
    neither with a gradient), broadcast over the spatial dims of ``z`` (B, N, ...): through the
    native kernels when they apply (the same bits, no ``f`` tensor), else by building ``f``."""
    if native.usable(z, noise, r, k, bias) and not (r.requires_grad or k.requires_grad):
        zd = z.detach()
        saturated = native.adc_codes(zd, noise, sigma, levels)
        in_place = not saturated and z._base is None
        return _AdcCombineRK.apply(z, levels, r.reshape(-1), k, inv, bias, saturated, in_place)
    f = (r.view(-1, 1) * k.view(1, -1)) * inv  # (B|1, N)
    f = f.view(*f.shape, *([1] * (z.dim() - 2)))
    return adc_combine(z, noise, sigma, levels, f, bias)


def table(device: torch.device, dtype: torch.dtype) -> Tensor:
    """The shared pre-sampled N(0, 1) table of the fast noise windows (built on first use)."""
    key = (device.type, device.index, dtype)
    tab = _TABLES.get(key)
    if tab is None:
        gen = torch.Generator(device=device).manual_seed(_TABLE_SEED)
        tab = torch.randn(_TABLE_SIZE, generator=gen, device=device, dtype=dtype)
        _TABLES[key] = tab
    return tab


def gaussian_noise(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    fast: bool = True,
) -> Tensor:
    """Standard-normal noise of ``shape``.

    ``fast``: a contiguous window of a fixed pre-sampled N(0, 1) table at an offset drawn from
    ``generator`` (entries within one call are distinct table entries, hence independent; the
    offset is uniform so each entry is N(0, 1)). Calls larger than half the table, or ``fast=False``,
    sample afresh with ``torch.randn``. The returned tensor may be a view: do not modify it in place.
    """
    device = torch.device(device)
    gdev = generator.device if generator is not None else device
    n = math.prod(shape)
    if not fast or n > _TABLE_SIZE // 2:
        return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=dtype).to(device)
    tab = table(device, dtype)
    off = noise_offset(n, generator, gdev)
    return tab[off : off + n].view(tuple(shape))


def noise_offset(n: int, generator: torch.Generator | None, gdev: torch.device) -> int:
    """The table offset of a fast noise window of ``n`` values (uniform over the valid offsets):
    ``torch.randint(0, _TABLE_SIZE - n + 1, (1,), generator=generator)``, drawn into a reused
    one-element tensor (the same draw, without allocating one per call)."""
    if gdev.type != "cpu":
        return int(torch.randint(0, _TABLE_SIZE - n + 1, (1,), generator=generator, device=gdev).item())
    buf = getattr(_offsets, "buf", None)
    if buf is None:
        buf = _offsets.buf = torch.empty(1, dtype=torch.int64)
    return int(buf.random_(0, _TABLE_SIZE - n + 1, generator=generator).item())


def abs_percentile(samples: list[Tensor], percentile: float) -> float:
    """The ``percentile`` (0-100] of the absolute values in ``samples`` (already subsampled)."""
    flat = torch.cat([s.reshape(-1).float().abs() for s in samples])
    if flat.numel() == 0:
        return 1.0
    k = max(1, min(flat.numel(), math.ceil(percentile / 100.0 * flat.numel())))
    return float(flat.kthvalue(k).values.item())


def subsample(x: Tensor, max_items: int, generator: torch.Generator | None) -> Tensor:
    """At most ``max_items`` random entries of ``x`` (flattened, detached) for range calibration."""
    flat = x.detach().reshape(-1)
    if flat.numel() <= max_items:
        return flat.clone()
    gdev = generator.device if generator is not None else flat.device
    idx = torch.randint(0, flat.numel(), (max_items,), generator=generator, device=gdev)
    return flat[idx.to(flat.device)]
