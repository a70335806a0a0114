"""The training forward and backward of a linear layer in one autograd node.

Hardware-aware training of a transformer runs many small layers (e.g. 768 tokens x 128 x 128),
and :func:`cimkit.analog.mvm._grad_route` records some forty autograd nodes per layer: the tiling
views, the weight scale, the division by it, the noise, the gains, the partial-sum views, the
converters. Their dispatch cost and memory passes, forward and backward, are several times the
layer's matmul. For the common case (dynamic per-sample DAC; one weight slice, one input cycle,
differential pair; an ADC with a fixed range; no calibration recorder; contiguous CPU float32
input; the native kernels loaded) :class:`_TrainLinear` is the whole layer: the DAC codes
(``dac_rows``), the analog weights (``train_weights`` for per-column scaling with no weight noise
or ``additive_channel`` noise, else the tensor ops), the matmul, the output noise and the ADC with
its digital epilogue (``adc_scale`` for one row tile, ``tiles_adc`` for two, the tensor ops for
more); its backward calls ``col_scale`` or ``tiles_adc_grad``, the matmul gradients exactly as
autograd's ``mm``/``bmm`` backward calls them, ``row_scale`` and ``weight_grad``.

Every step is the general route's float32 operations in the general route's order, so the plan
gives the same bits, forward and backward, whether the ADC clips or not
(``tests/analog/test_training_plan.py``). A plan (what depends on the layer's class, the mapping,
the device and the ADC range) is cached on the layer and rebuilt when one of them changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cimkit import native
from cimkit.analog.mapping import RangeMode, WeightPair, WeightScaling
from cimkit.analog.mvm import chain_of
from cimkit.analog.periphery import gaussian_noise

AnalogLayer = Any  # a cimkit.analog.layers.AnalogLayer (not imported: the layers import this module)

__all__ = ["trained_linear"]


@dataclass
class _Plan:
    objs: tuple[Any, ...]  # what the plan was computed from (compared by identity)
    version: int  # the ADC range's in-place version
    levels: int  # DAC levels per sign
    adc_levels: int
    gain: float  # ADC gain: levels / full-scale range
    out_noise: float  # output noise std, in the mapping's units (before the ADC gain)
    tiles: int
    rows: int
    native_weights: bool  # per-column scaling of a plain weight: the fused weight kernel applies


def _build(layer: AnalogLayer, objs: tuple[Any, ...], version: int) -> _Plan | None:
    chain = chain_of(layer)
    m, g = layer.mapping, layer.geometry
    ok = (
        not chain.fold and chain.dac_on and chain.dac_mode == RangeMode.DYNAMIC and not chain.bit_serial
        and chain.adc_on and not chain.adc_learned and not chain.offset and m.slice_bits == 0
        and m.pair == WeightPair.DIFFERENTIAL and g.n_in_pad == g.n_in
    )  # fmt: skip
    if not ok:
        return None
    gain = chain.adc_levels / (float(layer.output_range.detach().abs()) + 1e-12)
    native_w = m.scaling == WeightScaling.COLUMN and layer._grid() is None and g.ksz == 1
    return _Plan(objs=objs, version=version, levels=chain.dac_levels, adc_levels=chain.adc_levels, gain=gain,
                 out_noise=chain.out_noise, tiles=g.n_tiles, rows=g.rows, native_weights=native_w)  # fmt: skip


def _plan(layer: AnalogLayer) -> _Plan | None:
    """The layer's plan (None where it does not apply), recomputed when the layer's class (a
    transform added or undone), the mapping, the route, the device or the ADC range changed."""
    out_range = layer._parameters["output_range"]
    objs = (type(layer), layer.mapping, layer.route, layer.device_cfg, out_range)  # the class: its transforms
    cached = layer.__dict__.get("_training_plan")  # (objs, version, plan or None)
    if cached is not None and cached[1] == out_range._version and all(a is b for a, b in zip(cached[0], objs)):
        return cached[2]
    plan = _build(layer, objs, out_range._version)
    layer.__dict__["_training_plan"] = (objs, out_range._version, plan)
    return plan


def _mm_grads(gz: Tensor, q: Tensor, a: Tensor, need_q: bool, need_a: bool) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of ``z = q @ a`` as autograd's ``mm`` backward computes them (the same calls for
    the operands' layouts, hence the same bits): ``(dq, da)``."""
    gq = ga = None
    if need_q:
        col_major = q.stride(0) == 1 and q.stride(1) == q.shape[0]
        gq = a.mm(gz.t()).t() if col_major else gz.mm(a.t())
    if need_a:
        col_major = a.stride(0) == 1 and a.stride(1) == a.shape[0]
        ga = gz.t().mm(q).t() if col_major else q.t().mm(gz)
    return gq, ga


def _analog_weights(layer: AnalogLayer, w: Tensor, c: float, plan_native: bool) -> tuple[Tensor, Tensor]:
    """Matmul operand ``A · c`` ``(T, R, N)`` and ``w_scale`` (T, N) from the weight ``w`` (no
    gradient): :meth:`AnalogLayer._weights_from_parameters`' operations, then the general route's
    gain, ``u = tiles(w) / w_scale``, ``A = u + (noise(u) - u)`` (training weight noise), ``A · c``."""
    g = layer.geometry
    noise = layer.weight_noise if layer.training else None
    if plan_native and native.usable(w):
        std = 0.0 if noise is None else (noise.fused_std() if hasattr(noise, "fused_std") else None)
        if std is not None:  # one pass (cimkit.native.train_weights): the same operations
            nz = None
            if noise is not None:
                nz = gaussian_noise((1, g.n_tiles, g.rows, g.n_out), layer.hwa_generator, device=w.device,
                                    dtype=w.dtype, fast=layer.mapping.fast_noise)  # fmt: skip
            a_w, w_scale = native.train_weights(w.detach().view(g.n_out, -1), g.n_tiles, c, nz, std)
            return g.to_tiles(a_w), w_scale
    wt = g.to_tiles(w)  # (T, R, N), a view
    w_scale = layer.weight_scale(wt)  # (T, N)
    u = wt / w_scale.unsqueeze(1)  # (T, R, N) in [-1, 1]
    a = u.unsqueeze(0)  # (1, T, R, N)
    if noise is not None:
        a = a + noise(layer, a, None, u).sub_(a)  # the noisy weights forward
    return (a * c).permute(1, 2, 0, 3).reshape(g.n_tiles, g.rows, g.n_out), w_scale


class _TrainLinear(torch.autograd.Function):
    """One node for the whole layer: DAC codes, analog weights, matmul, output noise, ADC and
    digital epilogue, forward and backward (the general route's operations; module docstring).

    Gradients: the DAC's straight-through ``levels / r`` per sample (nothing clips), the matmul's,
    the ADC's straight-through estimator (zero where a code is at full scale), and ``(g · c) /
    w_scale`` back to the weight (``w_scale`` takes none).
    """

    @staticmethod
    def forward(ctx, x, w, bias, layer, plan, noise_gen):  # type: ignore[override]
        bsz, t, levels = x.shape[0], plan.tiles, plan.adc_levels
        q = torch.empty_like(x)
        r = native.dac_rows(x, q, plan.levels)  # (B,) ranges; q: integer codes
        gain = plan.gain if t == 1 else 1.0  # one tile: the ADC gain folded into the weights
        c = (1.0 / plan.levels) * gain
        a, w_scale = _analog_weights(layer, w, c, plan.native_weights)  # (T, R, N), (T, N)
        n = w_scale.shape[1]
        noise = None
        if plan.out_noise > 0:
            noise = gaussian_noise((1, bsz, t, 1, n), noise_gen, device=x.device, dtype=x.dtype,
                                   fast=layer.mapping.fast_noise)  # fmt: skip
        ctx.layer_shape, ctx.geometry, ctx.c, ctx.tiles = w.shape, layer.geometry, c, t
        ctx.levels, ctx.adc_levels = plan.levels, levels
        if t == 1:
            a2 = a[0]  # (R, N)
            z = torch.mm(q, a2)  # (B, N) in ADC units
            if layer.conversion_counter is not None:
                layer._count_conversions(z, 1)
            k = w_scale[0].contiguous()  # (N,)
            inv = 1.0 / gain
            y = torch.empty_like(z)
            saturated = native.adc_scale(z, noise.view(z.shape) if noise is not None else None,
                                         plan.out_noise * gain, levels, r, k, inv, bias, y)  # fmt: skip
            codes = z if saturated else None  # kept for the straight-through mask
            if saturated and bias is not None:  # the general route's fused multiply-add form there
                native.col_scale(z, r, k, inv, bias, native.COL_FMA, out=y)
            ctx.save_for_backward(q, a2, r, k, w_scale, codes)
            ctx.inv, ctx.saturated = inv, saturated
            return y
        xt = q.view(bsz, t, plan.rows).transpose(0, 1)  # (T, B, R)
        z = torch.bmm(xt, a)  # (T, B, N)
        if layer.conversion_counter is not None:
            layer._count_conversions(z, 1)
        r_adc = layer.output_range.detach().abs() + 1e-12
        ctx.rf, ctx.native_adc = float(r_adc), t == 2
        if t == 2:  # one native pass, the same operations (a longer sum over tiles may be reordered)
            y = native.tiles_adc(z, noise, plan.out_noise, r_adc, levels, w_scale, r, bias)
            ctx.save_for_backward(q, a, r, None, w_scale, z)  # z: now the noisy partial sums
            return y
        z5 = z.view(t, 1, bsz, 1, n).permute(1, 2, 0, 3, 4)  # (P, B, T, S, N)
        if noise is not None:
            z5 = torch.add(z5, noise, alpha=plan.out_noise)
        qz = z5 * (levels / r_adc)
        qz.clamp_(-levels, levels).round_().mul_(r_adc / levels)  # range_quantize's value output
        fac = w_scale.unsqueeze(1).unsqueeze(0).unsqueeze(1) * r.view(1, -1, 1, 1, 1)  # (1, B, T, 1, N)
        y = (qz * fac).sum(dim=(0, 2, 3))  # (B, N)
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(q, a, r, fac, w_scale, z5)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):  # type: ignore[override]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        gy = gy.contiguous()
        if ctx.tiles == 1:
            q, a2, r, k, w_scale, codes = ctx.saved_tensors
            mode = native.COL_STE if ctx.saturated else native.COL_MUL
            gz = native.col_scale(gy, r, k, ctx.inv, None, mode, out=torch.empty_like(gy), codes=codes,
                                  levels=ctx.adc_levels)  # fmt: skip
            gq, ga = _mm_grads(gz, q, a2, need_x, need_w)
            ga = ga.unsqueeze(0) if ga is not None else None  # (T, R, N)
        else:
            q, a, r, fac, w_scale, z5 = ctx.saved_tensors
            t, bsz, n = ctx.tiles, gy.shape[0], gy.shape[1]
            if ctx.native_adc:
                gz = native.tiles_adc_grad(gy, z5, ctx.rf, w_scale, r)  # (T, B, N); z5 here: (T, B, N)
            else:
                g5 = gy.view(1, bsz, 1, 1, n) * fac  # (1, B, T, 1, N)
                g5 = torch.ops.aten.hardtanh_backward(g5, z5, -ctx.rf, ctx.rf)  # STE: 0 outside the range
                gz = g5.permute(2, 0, 1, 3, 4).reshape(t, bsz, n)  # (T, B, N)
            xt = q.view(bsz, t, -1).transpose(0, 1)  # (T, B, R)
            gq = gz.bmm(a.transpose(1, 2)).transpose(0, 1).reshape(q.shape) if need_x else None
            ga = xt.transpose(1, 2).bmm(gz) if need_w else None  # (T, R, N)
        if need_x:
            gq = gq.contiguous()
            gx = native.row_scale(gq, r, ctx.levels, out=gq)  # in place: gq is this function's temporary
        if need_w:  # (g · c) / w_scale back in the weight's layout, one pass
            gw = native.weight_grad(ga, w_scale, ctx.c).view(ctx.layer_shape)
        if need_b:
            gb = gy.sum(dim=(0,))  # (N,)
        return gx, gw, gb, None, None, None


def trained_linear(layer: AnalogLayer, x: Tensor) -> Tensor | None:
    """The layer's training output for ``x`` (B, in) when the plan applies (module docstring); else None."""
    if not torch.is_grad_enabled() or layer.recorder is not None or not native.ready():
        return None
    if not layer.training and layer._modules["chip"]._buffers["g_prog"] is not None:
        return None  # a programmed chip in eval mode: the chip's read
    if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
        return None
    w = layer.source_weight()
    if not (w.requires_grad or x.requires_grad):
        return None  # nothing to differentiate: the no-grad route
    plan = _plan(layer)
    if plan is None:
        return None
    bias = layer._parameters.get("bias")
    if bias is not None and not native.usable(bias):
        return None
    gen = layer._noise_generator() if plan.out_noise > 0 else None
    return _TrainLinear.apply(x, w, bias, layer, plan, gen)
