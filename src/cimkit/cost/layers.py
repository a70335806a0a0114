"""Built-in cost handlers: Linear/Conv layers, elementwise leaves, embeddings, attention products.

* ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` (and every class made from them): MACs =
  output elements x fan-in (``in_features``, or ``in_channels/groups · kernel elements``);
  positions = output elements / outputs; float storage (:func:`~cimkit.cost.storage.storage_bytes`
  with 32-bit weights); a sparsity mask (:func:`cimkit.nn.weights.weight_mask`) gives the nonzero
  weights and which crossbar arrays stay empty.
* elementwise leaves, digital on every chip, ``digital_ops`` per output element: 1 for activations
  and other leaves, 2 for BatchNorm (scale, shift), 5 for LayerNorm/GroupNorm (mean, variance,
  subtract, divide, affine), 3 for softmax (exponential, sum, divide), the window size for pooling
  (compares or adds per output); Dropout, Identity, Flatten and Unflatten do no work.
* ``nn.Embedding``: a table lookup (buffer reads of the output).
* attention (:class:`cimkit.models.gpt.CausalSelfAttention.attend`): ``q kᵀ`` and the product with
  ``v`` densely, ``2 · B·H·T_q·T_k·D`` MACs, plus ``B·H·T_q·T_k`` exponentials (the method's own
  documented count), digital on CIM hardware (activation x activation, no stored weights).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

from cimkit.analog.layers import conv_out_size
from cimkit.cost.capture import Captured
from cimkit.cost.handlers import register_cost, register_site
from cimkit.cost.record import LayerCost
from cimkit.cost.storage import storage_bytes, values_bytes
from cimkit.models.gpt import CausalSelfAttention
from cimkit.nn.weights import weight_mask

__all__ = ["leaf_record", "weighted_record"]

FLOAT_BITS = 32


def _numel(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape)) if shape else 0


def _linear_shape(mod: nn.Linear, args: tuple) -> tuple[int, ...]:
    return (*args[0].shape[:-1], mod.out_features)


def _conv_shape(mod: nn.Module, args: tuple) -> tuple[int, ...]:
    x = args[0]
    nd = len(mod.kernel_size)  # type: ignore[arg-type]
    spatial = tuple(x.shape[-nd:])
    pad = mod.padding
    if pad == "same":
        out_sp = spatial
    else:
        out_sp = conv_out_size(spatial, mod.kernel_size, mod.stride, pad, mod.dilation)  # type: ignore[arg-type]
    lead = tuple(x.shape[: x.dim() - nd - 1])
    return (*lead, mod.out_channels, *out_sp)  # type: ignore[attr-defined]


def weighted_record(mod: nn.Module, cap: Captured, op: str) -> LayerCost:
    """The float record of a Linear/Conv layer (module docstring)."""
    w = mod.weight
    shape = tuple(int(s) for s in w.shape)
    n_out = shape[0]
    fan_in = _numel(shape[1:])
    weights = _numel(shape)
    bias = 0 if getattr(mod, "bias", None) is None else int(mod.bias.numel())  # type: ignore[union-attr]
    mask = weight_mask(mod)
    nnz = int(mask.count_nonzero()) if mask is not None else weights
    out_total = sum(_numel(c.out) for c in cap.calls)
    in_total = sum(_numel(c.args[0]) for c in cap.calls if c.args)
    positions = cap.per_inference(out_total / n_out)
    macs = positions * n_out * fan_in
    rec = LayerCost(
        name=cap.name, type=type(mod).__name__, op=op, calls=len(cap.calls), macs=macs, params=weights + bias,
        weights=weights, nnz_weights=nnz, w_bits=FLOAT_BITS, a_bits=FLOAT_BITS,
        size_bytes=storage_bytes(weights, FLOAT_BITS, bias=bias), bops=macs * FLOAT_BITS * FLOAT_BITS,
        in_elements=cap.per_inference(in_total), out_elements=cap.per_inference(out_total), positions=positions,
        weight_shape=shape, fan_in=fan_in,
    )  # fmt: skip
    if mask is not None:
        rec.extra["mask"] = mask.detach()
    return rec


@register_cost(nn.Linear, shape=_linear_shape)
def _linear(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    return weighted_record(mod, cap, "linear")


@register_cost(nn.Conv1d, nn.Conv2d, shape=_conv_shape)
def _conv(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    return weighted_record(mod, cap, "conv")


def _own_values(mod: nn.Module) -> int:
    n = sum(p.numel() for p in mod.parameters())
    return int(n + sum(b.numel() for b in mod.buffers() if b.is_floating_point()))


def _elementwise(mod: nn.Module, cap: Captured, ops_per_out: float, op: str = "elementwise") -> LayerCost:
    out_total = sum(_numel(c.out) for c in cap.calls)
    in_total = sum(_numel(c.args[0]) for c in cap.calls if c.args)
    values = _own_values(mod)
    return LayerCost(
        name=cap.name, type=type(mod).__name__, op=op, calls=len(cap.calls), params=sum(p.numel() for p in mod.parameters()),
        size_bytes=values_bytes(values), a_bits=FLOAT_BITS, in_elements=cap.per_inference(in_total),
        out_elements=cap.per_inference(out_total), digital_ops=cap.per_inference(out_total * ops_per_out),
    )  # fmt: skip


def leaf_record(mod: nn.Module, cap: Captured) -> LayerCost:
    """A leaf module without a handler of its own: one digital operation per output element."""
    return _elementwise(mod, cap, 1.0)


@register_cost(_BatchNorm)
def _batchnorm(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    return _elementwise(mod, cap, 2.0)


@register_cost(nn.LayerNorm, nn.GroupNorm)
def _norm(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    return _elementwise(mod, cap, 5.0)


@register_cost(nn.Softmax, nn.LogSoftmax)
def _softmax(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    return _elementwise(mod, cap, 3.0)


@register_cost(_MaxPoolNd, _AvgPoolNd)
def _pool(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    k = mod.kernel_size  # type: ignore[attr-defined]
    n_sp = len(cap.calls[0].args[0]) - 2 if cap.calls and cap.calls[0].args else 1  # spatial dims
    window = _numel(tuple(k)) if isinstance(k, (tuple, list)) else int(k) ** max(n_sp, 1)
    return _elementwise(mod, cap, float(window))


@register_cost(_AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd)
def _adaptive_pool(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    rec = _elementwise(mod, cap, 1.0)
    rec.digital_ops = rec.in_elements  # every input element is added/compared once
    return rec


@register_cost(_DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten)
def _free(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    rec = _elementwise(mod, cap, 0.0, op="none")
    rec.hardware = "none"
    return rec


@register_cost(nn.Embedding)
def _embedding(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    rec = _elementwise(mod, cap, 0.0, op="lookup")
    rec.weights = rec.nnz_weights = int(mod.weight.numel())
    return rec


@register_site(CausalSelfAttention, "attend")
def _attention(mod: nn.Module, cap: Captured) -> LayerCost:
    macs = ops = ins = outs = 0
    for c in cap.calls:
        q, k = c.args[0], c.args[1]
        lead, tq, d = _numel(q[:-2]), q[-2], q[-1]
        tk = k[-2]
        macs += 2 * lead * tq * tk * d
        ops += lead * tq * tk
        ins += sum(_numel(a) for a in c.args[:3])
        outs += _numel(c.out)
    return LayerCost(
        name=cap.name, type=f"{type(mod).__name__}.attend", op="matmul", calls=len(cap.calls),
        macs=cap.per_inference(macs), digital_ops=cap.per_inference(ops), a_bits=FLOAT_BITS,
        in_elements=cap.per_inference(ins), out_elements=cap.per_inference(outs),
    )  # fmt: skip
