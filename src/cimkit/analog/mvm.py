"""The analog matrix-vector multiply: one chain, three routes.

The chain (per layer, per forward), in the order the hardware does it::

    x ─ DAC (dac_bits, range r) ─ [bit planes] ─ partial sums z = Σ_rows x·A per (plane, tile, slice, column)
      ─ output noise ─ ADC (adc_bits, range) ─ shift-and-add over planes and slices, w_scale, drift
        compensation α, DAC full scale ─ Σ over tiles ─ [offset mapping: − offset·Σx] ─ + bias

:func:`chain_of` describes it once per forward (:class:`Chain`: which converters quantize, their
levels, planes, noise); the routes follow that description:

* ``fold``: when every conversion is exact (ideal ADC, no output noise) the chain is linear, so it
  is folded into one effective weight and one ``F.linear`` / ``F.conv`` (exact; fastest);
* ``nograd``: inference, in place on the partial sums, the batch in bounded-memory chunks;
* ``grad``: training, the same chain with straight-through converters and learnable ranges.

Their agreement is tested (``tests/analog/test_analog_layers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cimkit import native
from cimkit.analog.cells import fold_tiles, offset_per_unit
from cimkit.analog.mapping import RangeMode, WeightPair
from cimkit.analog.periphery import (
    adc_combine_rk,
    bits_levels,
    dynamic_dac_codes,
    gaussian_noise,
    range_quantize,
)
from cimkit.analog.workspace import scratch

AnalogLayer = Any  # a cimkit.analog.layers.AnalogLayer (not imported: the layers import this module)

__all__ = ["Chain", "chain_of", "mvm"]

_CHUNK_ELEMS = 1 << 22  # partial sums per inference chunk (bounded memory, noise-table sized)


@dataclass(frozen=True)
class Chain:
    """What the converters of one forward do (see the module docstring)."""

    dac_on: bool  # the DAC quantizes (dac_bits > 0 and not calibrating the DAC range)
    dac_levels: int  # levels per sign of the DAC
    dac_mode: RangeMode
    bit_serial: bool  # DAC codes applied one magnitude bit per cycle
    n_planes: int  # input cycles per conversion batch
    adc_on: bool  # the ADC quantizes
    adc_levels: int
    adc_learned: bool
    out_noise: float  # std of the additive noise per conversion (ADC input units of the mapping)
    offset: bool  # offset mapping (one device per weight + a digital offset)
    fold: bool  # route: fold the whole (linear) chain into one weight


def chain_of(layer: AnalogLayer) -> Chain:
    """The chain of ``layer``'s next forward (its mapping, calibration phase and route override)."""
    m = layer.mapping
    phase = layer.recorder.phase if layer.recorder is not None else None
    dac_on = m.dac_bits > 0 and phase != "dac"
    adc_on = m.adc_bits > 0 and phase != "adc"
    if phase == "dac" or layer.route == "fold":
        fold = True
    elif layer.route == "tiled" or phase == "adc":
        fold = False
    else:
        fold = m.ideal_adc
    return Chain(
        dac_on=dac_on,
        dac_levels=bits_levels(m.dac_bits) if m.dac_bits > 0 else 0,
        dac_mode=m.dac_range_mode,
        bit_serial=m.bit_serial and dac_on,
        n_planes=m.dac_bits - 1 if (m.bit_serial and dac_on) else 1,
        adc_on=adc_on,
        adc_levels=bits_levels(m.adc_bits) if adc_on else 0,
        adc_learned=m.adc_range_mode == RangeMode.LEARNED,
        out_noise=float(m.out_noise),
        offset=m.pair == WeightPair.OFFSET,
        fold=fold,
    )


# ----------------------------------------------------------------------------- shared stages


def _per_sample(v: Any) -> bool:
    return isinstance(v, Tensor) and v.dim() > 0


def _ps(v: Any, ndim: int, lead: int = 0) -> Any:
    """A per-sample ``(B,)`` factor viewed to broadcast over ``ndim`` dims with the batch at ``lead``."""
    if not _per_sample(v):
        return v
    return v.view(*([1] * lead), -1, *([1] * (ndim - lead - 1)))


def input_range(layer: AnalogLayer, x: Tensor, grad: bool) -> tuple[Any, Any]:
    """DAC full scale ``(r, r_b)``: ``r`` a 0-d tensor, or ``(B,)`` when dynamic; ``r_b`` broadcasts over ``x``."""
    m = layer.mapping
    if m.dac_range_mode == RangeMode.DYNAMIC:
        xf = x.detach().reshape(x.shape[0], -1)
        r = torch.maximum(xf.amax(1), xf.amin(1).neg_()).clamp_(min=1e-12)  # (B,) per-sample abs-max
        return r, r.view(-1, *([1] * (x.dim() - 1)))
    if m.dac_range_mode == RangeMode.CALIBRATED and not layer.calibrated and layer.recorder is None:
        layer._warn_uncalibrated()
    r = layer.input_range if grad and layer.input_range.requires_grad else layer.input_range.detach()
    r = r.abs() + 1e-12
    return r, r


def bit_planes(q: Tensor, n_planes: int) -> tuple[Tensor, Tensor]:
    """Integer DAC codes ``q`` (B, ...) -> sign-magnitude bit planes ``(P, B, ...)`` in {-1, 0, 1}
    and their shift-and-add weights ``2^k`` (P,)."""
    pw = torch.pow(2.0, torch.arange(n_planes, device=q.device, dtype=q.dtype))  # (P,)
    mag = q.abs().unsqueeze(0)  # (1, B, ...)
    planes = torch.floor(mag / pw.view(-1, *([1] * q.dim()))).remainder_(2.0).mul_(q.sign().unsqueeze(0))
    return planes, pw


def digital_coef(layer: AnalogLayer, w_scale: Tensor, alpha: Tensor | None, plane_coef: Tensor | None) -> Tensor:
    """Digital weight of every conversion: ``(P, T, S, N)`` = planes x slices x w_scale x compensation."""
    k = w_scale if alpha is None else w_scale * alpha  # (T, N)
    if layer.mapping.pair == WeightPair.OFFSET:
        k = k * 2.0
    coef = (k.unsqueeze(1) * layer.slice_coef.view(1, -1, 1)).unsqueeze(0)  # (1, T, S, N)
    if plane_coef is not None:
        coef = coef * plane_coef.view(-1, 1, 1, 1)  # (P, T, S, N)
    return coef


def offset_term(layer: AnalogLayer, x_dig: Tensor, scale: Any, w_scale: Tensor, alpha: Tensor | None) -> Tensor:
    """Offset mapping: ``-(2 g_min/g_range + 1) w_scale α Σ_tile x`` per output, from the digital inputs."""
    sx = layer._tile_input_sums(x_dig)  # (B, T, *sp)
    coef = -offset_per_unit(layer.device_cfg) * (w_scale if alpha is None else w_scale * alpha)  # (T, N)
    off = torch.einsum("bt...,tn->bn...", sx, coef)
    return off * _ps(scale, off.dim())


def effective_weight(layer: AnalogLayer, a: Tensor, w_scale: Tensor, alpha: Tensor | None) -> Tensor:
    """The digital weight (layer's shape) equivalent to one read when every conversion is exact."""
    g = layer.geometry
    wt = fold_tiles(a, w_scale, alpha, layer.slice_coef, layer.mapping.pair, layer.device_cfg, g.row_mask(a.device))
    return g.from_tiles(wt, layer.weight_shape)


# ----------------------------------------------------------------------------- routes


def mvm(layer: AnalogLayer, x: Tensor, a: Tensor, w_scale: Tensor, alpha: Tensor | None) -> Tensor:
    """The layer's output for prepared input ``x`` and analog weights ``(A, w_scale, alpha)``."""
    grad = torch.is_grad_enabled() and (
        x.requires_grad or a.requires_grad or layer.input_range.requires_grad or layer.output_range.requires_grad
    )
    chain = chain_of(layer)
    if layer.recorder is not None and layer.recorder.phase == "dac":
        layer.recorder.record(x)
    if chain.fold:
        return _fold_route(layer, chain, x, a, w_scale, alpha, grad)
    if grad:
        return _grad_route(layer, chain, x, a, w_scale, alpha)
    per_sample = chain.n_planes * layer.geometry.n_tiles * layer.n_slices * layer.geometry.n_out
    per_sample *= layer._out_numel_per_sample(x)
    chunk = max(1, _CHUNK_ELEMS // max(per_sample, 1))
    if x.shape[0] <= chunk:
        return _nograd_route(layer, chain, x, a, w_scale, alpha)
    # bounded memory: the batch in chunks of many samples (each chunk fully batched)
    return torch.cat([_nograd_route(layer, chain, xc, a, w_scale, alpha) for xc in x.split(chunk)])


def _fold_route(layer: AnalogLayer, chain: Chain, x: Tensor, a: Tensor, w_scale: Tensor, alpha: Tensor | None,
                grad: bool) -> Tensor:  # fmt: skip
    """Exact when every conversion is exact: the DAC, then one digital op with the effective weight."""
    chip = layer.chip
    cacheable = not grad and chip.programmed and not layer.training and chip.g_sigma is None
    if cacheable and chip.w_eff_cache is not None:
        w_eff = chip.w_eff_cache  # noise-free programmed chip: the same weight on every read
    else:
        w_eff = effective_weight(layer, a, w_scale, alpha)
        if cacheable:
            chip.w_eff_cache = w_eff
    if not chain.dac_on:
        return layer._digital_op(x, w_eff, layer.bias)
    levels = chain.dac_levels
    _, r_b = input_range(layer, x, grad)
    if grad:
        # a per-sample abs-max range clips nothing (and its (B, 1) range has no single clip bound)
        xq = range_quantize(x, r_b, levels, learn_range=chain.dac_mode == RangeMode.LEARNED,
                            clip=chain.dac_mode != RangeMode.DYNAMIC)  # fmt: skip
    else:
        xq = (x * (levels / r_b)).clamp_(-levels, levels).round_().mul_(r_b / levels)
    return layer._digital_op(xq, w_eff, layer.bias)


@torch.no_grad()
def _nograd_route(layer: AnalogLayer, chain: Chain, x: Tensor, a: Tensor, w_scale: Tensor,
                  alpha: Tensor | None) -> Tensor:  # fmt: skip
    """Inference: in-place ops on the partial sums; scalar gains folded into ``A``."""
    m = layer.mapping
    g = layer.geometry
    bsz = x.shape[0]
    # DAC: analog input x_rep * u in [-1, 1]; digital value x ~= x_rep * u * x_full
    fused_dac = chain.dac_on and chain.dac_mode == RangeMode.DYNAMIC and native.usable(x)
    buf = scratch("dac", x.shape, x.dtype, x.device) if fused_dac else None
    if buf is not None:  # one pass: per-sample abs-max range and codes (bit-identical to the ops below)
        levels = chain.dac_levels
        r = native.dac_rows(x.view(bsz, -1), buf.view(bsz, -1), levels)  # (B,)
        x_rep, u = buf, 1.0 / levels
    elif chain.dac_on:
        r, r_b = input_range(layer, x, False)
        levels = chain.dac_levels
        # the codes are a temporary of this call: reused scratch memory, not fresh pages per layer
        buf = scratch("dac", x.shape, x.dtype, x.device)
        x_rep = x * (levels / r_b) if buf is None else torch.mul(x, levels / r_b, out=buf)
        if not _per_sample(r):  # a per-sample abs-max range never clips
            x_rep.clamp_(-levels, levels)
        x_rep.round_()  # integer codes
        u: Any = 1.0 / levels
    else:
        r, r_b = input_range(layer, x, False)
        x_rep, u = x, 1.0 / r
    x_dig, u_dig, x_full = x_rep, u, r
    n_planes, plane_coef = 1, None
    if chain.bit_serial:
        planes, pw = bit_planes(x_rep, chain.n_planes)  # (P, B, ...)
        n_planes, plane_coef = planes.shape[0], pw * u  # each plane applied at full scale (u = 1)
        x_rep = planes.reshape(n_planes * bsz, *x.shape[1:])
        u = 1.0
    levels_adc = chain.adc_levels
    adc_mult = levels_adc / (float(layer.output_range.detach().abs()) + 1e-12) if chain.adc_on else 1.0
    u_ps = _per_sample(u)
    pre = adc_mult if u_ps else float(u) * adc_mult  # scalar gains folded into the weights
    z, z5 = layer._tiled_partial_sums(x_rep, a * pre, n_planes, bsz)  # z5: (P, B, T, S, N, *sp)
    if u_ps:
        z5.mul_(_ps(u, z5.dim(), lead=1))
    if layer.recorder is not None and layer.recorder.phase == "adc":
        layer.recorder.record(z5)
    noise = None
    if chain.out_noise > 0:
        noise = gaussian_noise(z.shape, layer._noise_generator(), device=z.device, dtype=z.dtype, fast=m.fast_noise)
    n_sp = z5.dim() - 5
    bias_t = layer.bias.detach() if layer.bias is not None else None
    if (n_sp == 0 and _per_sample(x_full) and n_planes == 1 and layer.n_slices == 1 and not chain.offset
            and not u_ps and native.usable(z, noise, x_full, bias_t)):  # fmt: skip
        layer._count_conversions(z5, n_planes)
        return _fused_adc(layer, chain, z, noise, adc_mult, w_scale, alpha, x_full, bias_t, bsz)
    if (n_sp > 0 and _per_sample(x_full) and n_planes * g.n_tiles * layer.n_slices == 1 and chain.adc_on
            and not chain.offset and not u_ps and native.usable(z, noise, x_full, bias_t)):  # fmt: skip
        # a one-tile convolution: noise and ADC in one native pass, the digital factor
        # (column coefficient x sample full scale) and the bias in another, in place; the same
        # float32 operations as the tensor ops below
        y = z5.reshape(bsz, g.n_out, *z5.shape[5:])  # (B, N, *sp): z itself, whichever conv route
        native.adc_codes(y, noise, chain.out_noise * adc_mult, levels_adc)
        layer._count_conversions(z5, n_planes)
        coef = (digital_coef(layer, w_scale, alpha, plane_coef) * (1.0 / adc_mult)).reshape(g.n_out)  # (N,)
        mode = native.COL_MUL_ADD if bias_t is not None else native.COL_MUL
        return native.col_scale(y, x_full, coef.contiguous(), 1.0, bias_t, mode, out=y)
    if noise is not None:
        z.add_(noise, alpha=chain.out_noise * adc_mult)
    if chain.adc_on:
        z.clamp_(-levels_adc, levels_adc).round_()
    layer._count_conversions(z5, n_planes)
    # digital: shift-and-add (planes, slices), tiles, w_scale, compensation, full scale, bias
    coef = digital_coef(layer, w_scale, alpha, plane_coef) * (1.0 / adc_mult)  # (P, T, S, N)
    single = n_planes * g.n_tiles * layer.n_slices == 1
    bias = layer.bias
    if n_sp == 0 and _per_sample(x_full):
        # linear layers: a (P, B, T, S, N) factor would be as large as the partial sums, so scale in
        # place: the per-column coefficients, then the per-sample DAC full scale (common to them all)
        if single:
            y = z5.reshape(bsz, g.n_out).mul_(coef.view(1, g.n_out))  # (B, N)
        else:
            y = z5.mul_(coef.unsqueeze(1)).sum(dim=(0, 2, 3))  # (B, N)
        xs = x_full.view(-1, 1)  # (B, 1)
        if bias is not None and not chain.offset:
            y = torch.addcmul(bias.view(1, -1), y, xs, out=y)  # bias + y * full scale, one pass
            bias = None
        else:
            y.mul_(xs)
    else:
        # convolutions (the factor has no spatial dims) or a fixed DAC range (no batch dim): small factor
        if _per_sample(x_full):
            fac = coef.unsqueeze(1) * x_full.view(1, -1, 1, 1, 1)  # (P, B, T, S, N)
        else:
            fac = (coef * x_full).unsqueeze(1)  # (P, 1, T, S, N)
        fac = fac.view(*fac.shape, *([1] * n_sp))
        if single:
            y = z5.reshape(bsz, g.n_out, *z5.shape[5:]).mul_(fac.reshape(fac.shape[1], g.n_out, *fac.shape[5:]))
        else:
            y = z5.mul_(fac).sum(dim=(0, 2, 3))  # (B, N, *sp)
    if chain.offset:
        y.add_(offset_term(layer, x_dig, u_dig * x_full, w_scale, alpha))
    if bias is not None:
        y.add_(bias.view(1, -1, *([1] * n_sp)))
    return y


def _fused_adc(layer: AnalogLayer, chain: Chain, z: Tensor, noise: Tensor | None, adc_mult: float,
               w_scale: Tensor, alpha: Tensor | None, x_full: Tensor, bias: Tensor | None,
               bsz: int) -> Tensor:  # fmt: skip
    """The ADC and digital epilogue of a linear layer with a per-sample DAC range in one pass
    (:func:`cimkit.native.adc_rows`): the same float32 operations as the tensor ops of
    :func:`_nograd_route`, so the same bits for up to 4 row tiles. With more tiles PyTorch's own
    sum over tiles changes order with the CPU's vector width; the kernel always sums in tile order."""
    g = layer.geometry
    t = g.n_tiles
    k = (digital_coef(layer, w_scale, alpha, None) * (1.0 / adc_mult)).reshape(t, g.n_out)  # (T, N)
    zt = z.view(t, bsz, g.n_out)  # (T, B, N): the matmul's own output
    out = zt[0] if t == 1 else torch.empty(bsz, g.n_out, dtype=z.dtype)
    levels = chain.adc_levels if chain.adc_on else None
    sigma = chain.out_noise * adc_mult
    return native.adc_rows(zt, noise, sigma, levels, k.contiguous(), x_full.view(-1), bias, out)  # (B, N)


def _grad_route(layer: AnalogLayer, chain: Chain, x: Tensor, a: Tensor, w_scale: Tensor,
                alpha: Tensor | None) -> Tensor:  # fmt: skip
    """Training: the same chain with STE converters and learnable ranges; scalar gains are folded
    into ``A`` and the digital coefficients, so the activations see few elementwise passes."""
    m = layer.mapping
    g = layer.geometry
    bsz = x.shape[0]
    if chain.dac_on and chain.dac_mode == RangeMode.DYNAMIC and native.usable(x):
        # per-sample range and codes in one native pass (the same bits as the ops below)
        x_rep, r = dynamic_dac_codes(x, chain.dac_levels)
        dynamic, u = True, 1.0 / chain.dac_levels
    else:
        r, r_b = input_range(layer, x, True)
        dynamic = _per_sample(r)
        if chain.dac_on:
            levels = chain.dac_levels
            if chain.dac_mode == RangeMode.LEARNED:
                x_rep, u = range_quantize(x, r_b, levels, learn_range=True), 1.0 / r  # x units
            else:
                x_rep = range_quantize(x, r_b, levels, out="codes", clip=not dynamic)  # integer codes
                u = 1.0 / levels
        else:
            x_rep, u = (x / r_b, 1.0) if dynamic else (x, 1.0 / r)
    x_dig, u_dig = x_rep, u
    n_planes, plane_coef = 1, None
    if chain.bit_serial:
        levels = chain.dac_levels
        x_norm = x_rep * u  # (B, ...) in [-1, 1]
        planes, pw = bit_planes((x_norm.detach() * levels).round_(), chain.n_planes)
        planes = planes + (x_norm - x_norm.detach()).unsqueeze(0)  # STE: sum_k 2^k / levels == 1
        n_planes, plane_coef = planes.shape[0], pw / levels
        x_rep, u = planes.reshape(n_planes * bsz, *x.shape[1:]), 1.0
    single = n_planes * g.n_tiles * layer.n_slices == 1
    fused = single and chain.adc_on and not chain.adc_learned
    gain = 1.0
    if fused:  # fold the ADC gain into the weights: partial sums come out in ADC units
        levels_adc = chain.adc_levels
        r_adc = float(layer.output_range.detach().abs()) + 1e-12
        gain = levels_adc / r_adc
    z_base, z5 = layer._tiled_partial_sums(x_rep, a * (u * gain), n_planes, bsz)  # (P, B, T, S, N, *sp)
    n_sp = z5.dim() - 5
    noise = None
    if chain.out_noise > 0:
        noise = gaussian_noise(z5.shape, layer._noise_generator(), device=z5.device, dtype=z5.dtype,
                               fast=m.fast_noise)  # fmt: skip
    if fused:  # digital factor per (sample, column): w_scale * alpha * full scale / ADC gain
        k = w_scale[0] if alpha is None else w_scale[0] * alpha  # (N,)
        if chain.offset:
            k = k * 2.0
        # f = (full scale (B|1,) x k (N,)) / gain per (sample, column), applied by adc_combine_rk
        # the op's own output (not a view of it): converted in place without an autograd rebase
        z = z_base if z_base.shape == (bsz, g.n_out, *z5.shape[5:]) else z5.reshape(bsz, g.n_out, *z5.shape[5:])
        nz = noise.view(z.shape) if noise is not None else None
        y = adc_combine_rk(z, nz, chain.out_noise * gain, levels_adc, r, k.contiguous(), 1.0 / gain, layer.bias)
    else:
        if noise is not None:
            z5 = torch.add(z5, noise, alpha=chain.out_noise)
        if chain.adc_on:
            r_adc_t = (layer.output_range if chain.adc_learned else layer.output_range.detach()).abs() + 1e-12
            z5 = range_quantize(z5, r_adc_t, chain.adc_levels, learn_range=chain.adc_learned)
        coef = digital_coef(layer, w_scale, alpha, plane_coef)  # (P, T, S, N)
        fac = coef.unsqueeze(1) * _ps(r, 5, lead=1)  # (P, B|1, T, S, N)
        fac = fac.view(*fac.shape, *([1] * n_sp))
        bias = layer.bias.view(1, -1, *([1] * n_sp)) if layer.bias is not None else None
        if single:
            zz = z5.reshape(bsz, g.n_out, *z5.shape[5:])
            ff = fac.reshape(fac.shape[1], g.n_out, *fac.shape[5:])
            y = torch.addcmul(bias, zz, ff) if bias is not None else zz * ff
        else:
            y = (z5 * fac).sum(dim=(0, 2, 3))  # (B, N, *sp)
            if bias is not None:
                y = y + bias
    layer._count_conversions(z5, n_planes)
    if chain.offset:
        y = y + offset_term(layer, x_dig, u_dig * r, w_scale, alpha)
    return y
