"""Pure quantization math: integer ranges, scales/zero points, quantize / dequantize, fake quantization
with straight-through gradients, LSQ, binary (XNOR-Net) and ternary (TWN, BitNet b1.58) weights.

Conventions (shared by every cimkit quantizer, the integer export and the ONNX export):

* codes are integers ``q`` in ``[qmin, qmax]``; the real value is ``(q - zero_point) * scale``;
* rounding is to nearest, ties to even (``torch.round``, the same as ONNX ``QuantizeLinear``);
* symmetric grids are signed and *narrow*: ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with zero point 0
  (so a 2-bit symmetric grid is {-1, 0, 1} and 8 bits use -127..127, exactly representable in int8);
* asymmetric grids are unsigned ``[0, 2^b - 1]`` with an integer zero point (the real range is
  widened to contain 0 so that 0 is exact, which zero padding needs);
* unsigned activation grids (post-ReLU tensors) are ``[0, 2^b - 1]`` with zero point 0;
* per-channel scales run along ``axis`` (0 = output channels of a Linear/Conv weight) and have
  shape ``(C,)``; per-tensor scales have shape ``(1,)`` (a one-element tensor).

Gradients: :func:`fake_quantize` passes gradients straight through inside the clipping range and
blocks them outside (Bengio et al. 2013; Jacob et al. CVPR 2018). When ``scale`` requires grad the
same expression gives exactly the LSQ gradient of Esser et al., ICLR 2020, eq. 3:
``d x̂/d s = round(x/s) - x/s`` inside the range, ``qmin - z`` below and ``qmax - z`` above;
:func:`grad_scale` applies their gradient scale ``g = 1/sqrt(N · Qp)`` (Sec. 2.2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cimkit import native
from cimkit.errors import ConfigError

EPS = 1e-8  # smallest scale: an all-zero tensor still gets a finite grid


# ----------------------------------------------------------------------------- ranges and parameters


def qrange(bits: int, signed: bool, narrow: bool = True) -> tuple[int, int]:
    """Integer code range ``(qmin, qmax)`` of a ``bits``-bit grid.

    Signed narrow: ``[-(2^(b-1)-1), 2^(b-1)-1]``; signed full: ``[-2^(b-1), 2^(b-1)-1]``;
    unsigned: ``[0, 2^b - 1]``.
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
        raise ConfigError(f"bits: {bits!r} is out of range; allowed: [1, 16]")
    if signed:
        if bits == 1:
            return (-1, 1) if narrow else (-1, 0)
        hi = 2 ** (bits - 1) - 1
        return (-hi if narrow else -hi - 1), hi
    return 0, 2**bits - 1


def reduce_dims(x: Tensor, axis: int | None) -> list[int]:
    """Dims to reduce over to get one statistic per slice along ``axis`` (all dims when None)."""
    if axis is None:
        return list(range(x.dim()))
    ax = axis % x.dim()
    return [d for d in range(x.dim()) if d != ax]


def broadcast_param(p: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """Reshape a ``(C,)`` or ``(1,)`` parameter to broadcast against ``x`` along ``axis``."""
    if axis is None or p.numel() == 1:
        return p.reshape([1] * x.dim()) if x.dim() else p.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return p.reshape(shape)


def minmax(x: Tensor, axis: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-tensor ``(1,)`` or per-channel ``(C,)`` minimum and maximum of ``x``."""
    if axis is None:
        return x.detach().amin().reshape(1), x.detach().amax().reshape(1)
    dims = reduce_dims(x, axis)
    return x.detach().amin(dim=dims), x.detach().amax(dim=dims)  # (C,), (C,)


def qparams_from_range(
    lo: Tensor,
    hi: Tensor,
    bits: int,
    *,
    symmetric: bool,
    unsigned: bool = False,
    narrow: bool = True,
) -> tuple[Tensor, Tensor, int, int]:
    """``(scale, zero_point, qmin, qmax)`` of the grid covering ``[lo, hi]``.

    ``unsigned`` (non-negative data, e.g. after ReLU): ``[0, hi]`` on ``[0, 2^b-1]``, zero point 0.
    ``symmetric``: ``max(|lo|, |hi|)`` on the signed narrow grid, zero point 0.
    Otherwise asymmetric: ``[min(lo, 0), max(hi, 0)]`` on ``[0, 2^b-1]`` with a rounded zero point.
    Scales are at least ``EPS``; zero points are float tensors holding integers.
    """
    lo = lo.detach().float()
    hi = hi.detach().float()
    if unsigned:
        qmin, qmax = qrange(bits, signed=False)
        scale = (hi.clamp_min(0) / qmax).clamp_min(EPS)
        return scale, torch.zeros_like(scale), qmin, qmax
    if symmetric:
        qmin, qmax = qrange(bits, signed=True, narrow=narrow)
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = (amax / qmax).clamp_min(EPS)
        return scale, torch.zeros_like(scale), qmin, qmax
    qmin, qmax = qrange(bits, signed=False)
    lo0, hi0 = lo.clamp_max(0), hi.clamp_min(0)
    scale = ((hi0 - lo0) / (qmax - qmin)).clamp_min(EPS)
    zp = torch.clamp(qmin - torch.round(lo0 / scale), qmin, qmax)
    return scale, zp, qmin, qmax


# ----------------------------------------------------------------------------- quantize / dequantize


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None) -> Tensor:
    """Integer codes ``clamp(round(x / s) + z, qmin, qmax)`` (as a float tensor of integer values)."""
    s = broadcast_param(scale, x, axis)
    z = broadcast_param(zero_point, x, axis)
    return torch.clamp(torch.round(x / s) + z, qmin, qmax)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None = None) -> Tensor:
    """Real values ``(q - z) * s``."""
    s = broadcast_param(scale, q, axis)
    z = broadcast_param(zero_point, q, axis)
    return (q.to(s.dtype) - z) * s


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity gradient backward."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: Tensor, g: float) -> Tensor:
    """Value ``x``, gradient multiplied by ``g`` (LSQ's step-size gradient scaling)."""
    return (x - x * g).detach() + x * g


def lsq_grad_scale(numel: int, qmax: int) -> float:
    """LSQ gradient scale ``g = 1 / sqrt(N · Qp)`` (Esser et al. 2020, Sec. 2.2)."""
    return 1.0 / math.sqrt(max(numel, 1) * max(qmax, 1))


class _FakeQuant(torch.autograd.Function):
    """Fused fake quantization: the forward is exactly ``dequantize(quantize(x))``; the backward
    is the STE for ``x`` and the LSQ gradient for ``scale``, written with differentiable ops (so
    double backward through the ``x`` path works)."""

    @staticmethod
    def forward(ctx, x, s, z, qmin, qmax, red_dims):  # type: ignore[no-untyped-def, override]
        v = x / s
        qz = torch.round(v) + z  # codes before clamping
        q = torch.clamp(qz, qmin, qmax)
        out = (q - z) * s
        inside = (qz >= qmin) & (qz <= qmax)
        ctx.red_dims = red_dims
        ctx.s_shape = s.shape
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(inside, (q - z) - v * inside)  # d out / d s, per element
        else:
            ctx.save_for_backward(inside)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        inside = ctx.saved_tensors[0]
        gx = grad * inside if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            local = ctx.saved_tensors[1]
            gs = (grad * local).sum(dim=ctx.red_dims, keepdim=True) if ctx.red_dims else grad * local
            gs = gs.reshape(ctx.s_shape)
        return gx, gs, None, None, None, None


def fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor | None, qmin: int, qmax: int, axis: int | None = None
) -> Tensor:
    """Quantize then dequantize, differentiable by the straight-through estimator.

    ``d/dx`` is 1 where ``qmin <= round(x/s) + z <= qmax`` and 0 outside. If ``scale`` requires
    grad, ``d/ds`` is the LSQ step-size gradient (module docstring); wrap ``scale`` with
    :func:`grad_scale` for LSQ's gradient scaling. ``zero_point`` (None = 0) gets no gradient.
    The value equals ``dequantize(quantize(x, ...), ...)`` exactly.
    """
    s = broadcast_param(scale, x, axis)
    z = torch.zeros((), dtype=x.dtype, device=x.device) if zero_point is None else broadcast_param(zero_point, x, axis)
    red = [d for d in range(x.dim()) if s.dim() == x.dim() and s.shape[d] == 1 and x.shape[d] != 1]
    if s.dim() != x.dim():
        red = list(range(x.dim()))
    no_grad = not torch.is_grad_enabled() or not (x.requires_grad or s.requires_grad)
    if no_grad and x.dtype == s.dtype == z.dtype:
        # inference: the forward of _FakeQuant (same ops, same order: the same values) on one fresh
        # tensor, without the straight-through mask that only a backward pass would read; a zero
        # zero point (symmetric grids, most activations) skips its add and subtract
        if s.numel() == 1 and z.numel() == 1 and native.usable(x, s, z):  # one fused pass (the same bits)
            return native.fake_quant(x, float(s), float(z), qmin, qmax)
        if zero_point is None or not bool(z.any()):
            return torch.div(x, s).round_().clamp_(qmin, qmax).mul_(s)
        return torch.div(x, s).round_().add_(z).clamp_(qmin, qmax).sub_(z).mul_(s)
    return _FakeQuant.apply(x, s, z.detach(), qmin, qmax, red)


def fake_quantize_weight(w: Tensor, bits: int, per_channel: bool = True, symmetric: bool = True) -> Tensor:
    """``Q_b(W)``: min/max-calibrated fake quantization of a weight tensor (used by HAWQ's Ω).

    ``bits = 1`` gives binary weights (:func:`binary_fake`). Per-channel scales run along dim 0.
    Gradients pass straight through (inside the range).
    """
    if bits == 1:
        return binary_fake(w, per_channel=per_channel)
    axis = 0 if per_channel and w.dim() > 1 else None
    lo, hi = minmax(w, axis)
    scale, zp, qmin, qmax = qparams_from_range(lo, hi, bits, symmetric=symmetric)
    return fake_quantize(w, scale.to(w.dtype), zp.to(w.dtype), qmin, qmax, axis)


# ----------------------------------------------------------------------------- binary / ternary


def _abs_mean(w: Tensor, axis: int | None) -> Tensor:
    """Mean of |w| per channel ``(C,)`` or per tensor ``(1,)`` (detached)."""
    a = w.detach().abs()
    return a.mean().reshape(1) if axis is None else a.mean(dim=reduce_dims(w, axis))


def ste_clipped(w: Tensor, value: Tensor, clip: float = 1.0) -> Tensor:
    """Forward ``value``; backward gradient 1 where ``|w| <= clip`` and 0 elsewhere (the
    "hardtanh" straight-through estimator of BinaryConnect / BNN, Courbariaux et al. 2016)."""
    wc = torch.clamp(w, -clip, clip)
    return wc + (value - wc).detach()


def sign_nonzero(w: Tensor) -> Tensor:
    """``sign(w)`` with ``sign(0) = +1`` so binary codes are only ±1."""
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))


def binarize(w: Tensor, per_channel: bool = True) -> tuple[Tensor, Tensor]:
    """XNOR-Net binary weights (Rastegari et al., ECCV 2016, eq. 4): codes ``sign(w)`` in {-1, +1}
    and scale ``α = mean|w|`` per output channel ``(C,)`` (or per tensor ``(1,)``)."""
    axis = 0 if per_channel and w.dim() > 1 else None
    return sign_nonzero(w.detach()), _abs_mean(w, axis).clamp_min(EPS)


def twn_threshold(w: Tensor, per_channel: bool = True, delta_factor: float = 0.7) -> Tensor:
    """TWN threshold ``Δ = 0.7·mean|w|`` per channel ``(C,)`` or per tensor ``(1,)``."""
    axis = 0 if per_channel and w.dim() > 1 else None
    return delta_factor * _abs_mean(w, axis)


def twn_ternarize(w: Tensor, per_channel: bool = True, delta_factor: float = 0.7) -> tuple[Tensor, Tensor]:
    """Ternary Weight Networks (Li, Zhang & Liu 2016, eqs. 9-10): threshold ``Δ = 0.7·mean|w|``,
    codes ``sign(w)·[|w| > Δ]`` in {-1, 0, 1}, scale ``α = mean of |w| over |w| > Δ``."""
    axis = 0 if per_channel and w.dim() > 1 else None
    a = w.detach().abs()
    delta = broadcast_param(twn_threshold(w, per_channel, delta_factor), w, axis)
    mask = (a > delta).to(w.dtype)
    if axis is None:
        alpha = ((a * mask).sum() / mask.sum().clamp_min(1)).reshape(1)
    else:
        dims = reduce_dims(w, axis)
        alpha = (a * mask).sum(dim=dims) / mask.sum(dim=dims).clamp_min(1)  # (C,)
    return torch.sign(w.detach()) * mask, alpha.clamp_min(EPS)


def absmean_ternarize(w: Tensor, per_channel: bool = False) -> tuple[Tensor, Tensor]:
    """BitNet b1.58 (Ma et al. 2024, eq. 1-3): ``γ = mean|W|``, codes ``RoundClip(W/γ, -1, 1)``,
    scale ``γ``. The paper uses one ``γ`` per tensor (``per_channel=False``)."""
    axis = 0 if per_channel and w.dim() > 1 else None
    gamma = _abs_mean(w, axis).clamp_min(EPS)
    q = torch.clamp(torch.round(w.detach() / broadcast_param(gamma, w, axis)), -1, 1)
    return q, gamma


def _fake_from(w: Tensor, codes: Tensor, scale: Tensor, per_channel: bool, clip: float) -> Tensor:
    axis = 0 if per_channel and w.dim() > 1 else None
    value = codes * broadcast_param(scale.to(w.dtype), w, axis)
    return ste_clipped(w, value, clip)


def binary_fake(w: Tensor, per_channel: bool = True, clip: float = 1.0) -> Tensor:
    """``α·sign(w)`` with a clipped straight-through gradient (:func:`ste_clipped`)."""
    q, a = binarize(w, per_channel)
    return _fake_from(w, q, a, per_channel, clip)


def twn_fake(w: Tensor, per_channel: bool = True, clip: float = 1.0) -> Tensor:
    """TWN ternary weights with a clipped straight-through gradient."""
    q, a = twn_ternarize(w, per_channel)
    return _fake_from(w, q, a, per_channel, clip)


def absmean_fake(w: Tensor, per_channel: bool = False, clip: float = 1.0) -> Tensor:
    """BitNet b1.58 ternary weights with a clipped straight-through gradient."""
    q, g = absmean_ternarize(w, per_channel)
    return _fake_from(w, q, g, per_channel, clip)


# ----------------------------------------------------------------------------- per-token and per-group grids


def per_token_qparams(x: Tensor, bits: int, symmetric: bool = True, dim: int = -1) -> tuple[Tensor, Tensor, int, int]:
    """Dynamic grid of every token: ``(scale, zero_point, qmin, qmax)`` with one scale per vector
    along ``dim`` (the feature dimension), shaped like ``x`` with ``dim`` of size 1.

    ``symmetric``: the token's abs-max on the signed narrow grid ``[-(2^(b-1)-1), 2^(b-1)-1]``, zero
    point 0 (BitNet b1.58's ``Quant(x) = Clip(round(x · Q_b / γ))`` with ``γ = ||x||_∞`` and
    ``Q_b = 2^(b-1) - 1``; Ma et al. 2024 / Wang et al. 2023, eq. 4). Otherwise the token's
    ``[min(x, 0), max(x, 0)]`` on ``[0, 2^b - 1]`` with a rounded zero point. Detached."""
    xd = x.detach()
    lo, hi = xd.amin(dim=dim, keepdim=True), xd.amax(dim=dim, keepdim=True)  # (..., 1, ...)
    return qparams_from_range(lo, hi, bits, symmetric=symmetric)


def fake_quantize_per_token(x: Tensor, bits: int, symmetric: bool = True, dim: int = -1) -> Tensor:
    """``x`` quantized and dequantized on its per-token grid (:func:`per_token_qparams`).

    Nothing is clipped (each token's grid covers its own range), so the straight-through gradient
    is the identity; the scale is a function of the data and gets no gradient (as in BitNet)."""
    s, z, qmin, qmax = per_token_qparams(x, bits, symmetric, dim)
    s, z = s.to(x.dtype), z.to(x.dtype)
    q = torch.clamp(torch.round(x.detach() / s) + z, qmin, qmax)
    return (q - z) * s + (x - x.detach())  # exactly the grid value forward, identity gradient


def group_rows(w: Tensor, group_size: int) -> Tensor:
    """``w`` (C_out, ...) as ``(C_out · G, group_size)``: each output row's flattened fan-in cut into
    ``G = fan_in / group_size`` consecutive groups (a view when ``w`` is contiguous). Per-channel
    quantization of this matrix along dim 0 is per-group quantization of ``w``."""
    fan_in = w[0].numel() if w.dim() > 1 else w.numel()
    if group_size <= 0 or fan_in % group_size:
        raise ConfigError(f"group_size: {group_size} does not divide the fan-in {fan_in}; allowed: a divisor of it")
    return w.reshape(-1, group_size)
