"""The inference forward of a programmed linear layer with few Python steps.

A transformer's layers are small (e.g. 768 tokens x 128 x 128), so the analog forward of
:func:`cimkit.analog.mvm._nograd_route` spends as long on its per-call Python work (the chain's
description, the ADC gain, the digital coefficients, views, the checks of every kernel) as on its
memory passes. For the common case (a programmed chip in eval mode without autograd; dynamic
per-sample DAC; one weight slice, one input cycle, differential pair; no calibration recorder; the
native kernels loaded) everything that depends only on the chip and the layer's ranges is computed
once into a plan and reused while the objects it was computed from are unchanged (the same tensors,
not modified in place). One forward is then: a read of the chip with the scalar gains folded into
it (``read_pairs``), the DAC (``dac_rows``), the matmul, the output noise and the ADC with its
digital epilogue (``adc_rows``): the same operations in the same order as the general route, so the
same bits (``tests/analog/test_inference_plan.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cimkit import native
from cimkit.analog.mapping import RangeMode, WeightPair
from cimkit.analog.mvm import _CHUNK_ELEMS, chain_of, digital_coef
from cimkit.analog.periphery import gaussian_noise, noise_offset, table
from cimkit.analog.workspace import scratch

AnalogLayer = Any  # a cimkit.analog.layers.AnalogLayer (not imported: the layers import this module)

__all__ = ["programmed_linear"]

_CPU = torch.device("cpu")


@dataclass
class _Plan:
    objs: tuple[Any, ...]  # what the plan was computed from (compared by identity)
    versions: tuple[int, ...]  # their in-place versions
    levels: int  # DAC levels per sign
    adc_levels: int | None  # None: the ADC does not quantize
    pre: float  # scalar gains folded into the read: DAC step x ADC gain
    sigma: float  # output noise in ADC units
    k: Tensor  # (T, N) digital coefficient of every conversion, divided by the ADC gain
    tiles: int
    rows: int
    a_pre: Tensor | None  # a noise-free chip's read, scaled (the same on every forward)
    table: Tensor | None  # the shared noise table the fast windows read (None: fresh samples)


def _sources(layer: AnalogLayer, chip: Any) -> tuple[tuple[Any, ...], tuple[int, ...]]:
    """What a plan depends on (the module dicts read directly: this runs on every forward). Not the
    bias: the kernel reads it where it is, so training it does not invalidate the plan."""
    cb, lp = chip._buffers, layer._parameters
    tensors = (cb["w_scale"], cb["alpha"], lp.get("output_range"), layer._buffers["slice_coef"], cb["g_mean"],
               cb["g_sigma"], chip._a_cache)  # fmt: skip
    objs = (*tensors, layer.mapping, layer.route, chip._pair, chip._dev, chip.read_generator)
    return objs, tuple(-1 if t is None else t._version for t in tensors)


def _build(layer: AnalogLayer, objs: tuple[Any, ...], versions: tuple[int, ...]) -> _Plan | None:
    chain = chain_of(layer)
    g = layer.geometry
    chip = layer.chip
    ok = (
        not chain.fold and chain.dac_on and chain.dac_mode == RangeMode.DYNAMIC and not chain.bit_serial
        and layer.n_slices == 1 and not chain.offset and chip._pair == WeightPair.DIFFERENTIAL
        and g.n_in_pad == g.n_in
    )  # fmt: skip
    if not ok or not native.usable(chip.g_mean, chip.g_sigma, chip.w_scale, chip.alpha, layer.bias):
        return None
    adc_mult = chain.adc_levels / (float(layer.output_range.detach().abs()) + 1e-12) if chain.adc_on else 1.0
    pre = float(1.0 / chain.dac_levels) * adc_mult  # as the general route folds them: u * ADC gain
    k = (digital_coef(layer, chip.w_scale, chip.alpha, None) * (1.0 / adc_mult)).reshape(g.n_tiles, g.n_out)
    fast = chip.fast_noise or layer.mapping.fast_noise  # the table is built only where it is read
    a_pre = None
    if chip.g_sigma is None:  # the same read every time: scale it once
        a_pre = chip.read() * pre
        objs, versions = _sources(layer, chip)  # the read filled the chip's cache
    return _Plan(objs=objs, versions=versions, levels=chain.dac_levels,
                 adc_levels=chain.adc_levels if chain.adc_on else None, pre=pre,
                 sigma=chain.out_noise * adc_mult, k=k.contiguous(), tiles=g.n_tiles, rows=g.rows,
                 a_pre=a_pre, table=table(_CPU, torch.float32) if fast else None)  # fmt: skip


def _plan(layer: AnalogLayer, chip: Any) -> _Plan | None:
    """The layer's plan (None where it does not apply), recomputed only when its sources changed."""
    objs, versions = _sources(layer, chip)
    cached = layer.__dict__.get("_inference_plan")  # (objs, versions, plan or None)
    if cached is not None and cached[1] == versions and all(a is b for a, b in zip(cached[0], objs, strict=True)):
        return cached[2]
    plan = _build(layer, objs, versions)
    if plan is not None:
        objs, versions = plan.objs, plan.versions
    layer.__dict__["_inference_plan"] = (objs, versions, plan)
    return plan


def _window(plan: _Plan, n: int, gen: torch.Generator | None) -> tuple[Tensor, int] | None:
    """A fast noise window of ``n`` values as ``(table, offset)``, drawn from ``gen`` exactly as
    :func:`cimkit.analog.periphery.gaussian_noise` draws it; None where that would sample afresh."""
    if plan.table is None or n > plan.table.numel() // 2:
        return None
    return plan.table, noise_offset(n, gen, _CPU)


def programmed_linear(layer: AnalogLayer, x: Tensor) -> Tensor | None:
    """The layer's inference output for ``x`` (B, in) when the plan applies (module docstring); else None."""
    if layer.training or torch.is_grad_enabled() or layer.recorder is not None:
        return None
    chip = layer._modules["chip"]
    if chip._buffers["g_prog"] is None or not native.ready():
        return None
    if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
        return None
    plan = _plan(layer, chip)
    bsz = x.shape[0]
    if plan is None or bsz * plan.k.numel() > _CHUNK_ELEMS:  # the general route splits the batch
        return None
    bias = layer._parameters.get("bias")
    if bias is not None and not native.usable(bias):
        return None
    gen = chip.read_generator  # the read noise, then the output noise (the general route's order)
    if plan.a_pre is not None:
        a = plan.a_pre  # (1, T, R, N)
    else:  # Chip.read's native branch inlined (the same draw and kernel), without its per-call checks
        # (the plan made them): routing through Chip.read measured ~3 % slower on the whole LM forward
        g_mean = chip._buffers["g_mean"]
        win = _window(plan, g_mean.numel(), gen) if chip.fast_noise else None
        if win is None:
            win = gaussian_noise(g_mean.shape, gen, device=x.device, dtype=x.dtype, fast=False), 0
        inv = 1.0 / chip._dev.g_range
        buf = scratch("read", (1, *g_mean.shape[2:]), x.dtype, x.device)  # a temporary: the matmul operand
        a = native.read_pairs(g_mean, chip._buffers["g_sigma"], win[0], inv, plan.pre, win[1], buf)  # (1, T, R, N)
    n, t = plan.k.shape[1], plan.tiles
    q = scratch("dac", x.shape, x.dtype, x.device)
    r = native.dac_rows(x, q, plan.levels)  # (B,) ranges; q: integer codes
    if t == 1:
        z = torch.matmul(q, a[0, 0])  # (B, N)
        out = z
    else:
        xt = q.view(bsz, t, plan.rows).transpose(0, 1)  # (T, B, R)
        z = torch.bmm(xt, a[0], out=scratch("tiles", (t, bsz, n), x.dtype, x.device))  # (T, B, N)
        out = torch.empty(bsz, n, dtype=x.dtype)
    nwin: tuple[Tensor | None, int] = (None, 0)
    if plan.sigma > 0:
        gen_out = gen if gen is not None else layer._noise_generator()
        nwin = _window(plan, z.numel(), gen_out) if layer.mapping.fast_noise else None
        if nwin is None:
            nwin = gaussian_noise(z.shape, gen_out, device=x.device, dtype=x.dtype, fast=False), 0
    if layer.conversion_counter is not None:
        layer._count_conversions(z, 1)
    zt = z.view(t, bsz, n)
    return native.adc_rows(zt, nwin[0], plan.sigma, plan.adc_levels, plan.k, r, bias, out, nwin[1])  # (B, N)
