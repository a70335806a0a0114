"""Quantized drop-in layers: :class:`QuantLinear`, :class:`QuantConv1d`, :class:`QuantConv2d`.

Each subclasses its float layer (same ``weight`` / ``bias`` parameters, same hyper-parameters, so
code that reads ``in_features`` or ``kernel_size`` keeps working) and adds ``w_quant``
(:class:`~cimkit.quant.quantizers.WeightQuantizer`) and ``a_quant`` (an
:class:`~cimkit.quant.quantizers.ActQuantizer` of the layer's input, or None for float inputs).
``from_float`` / ``to_float`` swap reversibly: the float module's attributes, parameters (the very
same ``Parameter`` objects) and hooks move across unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.errors import ConfigError
from cimkit.nn.weights import remask
from cimkit.quant.config import QuantConfig, WMode
from cimkit.quant.quantizers import ActQuantizer, WeightQuantizer

_QUANT_ATTRS = ("quant_config", "w_quant", "a_quant")
_QUANT_MODULES = ("w_quant", "a_quant")


def _shallow_state(mod: nn.Module) -> dict[str, Any]:
    """A copy of ``mod.__dict__`` whose dicts/sets are new containers holding the same objects."""
    return {k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in mod.__dict__.items()}


class QuantLayer:
    """Mixin of the quantized layers (use ``isinstance(m, QuantLayer)``).

    A quantized layer is an instance of a subclass of the layer it was made from (``QuantLinear``
    for ``nn.Linear``; for any other ``nn.Linear`` / ``nn.Conv*`` subclass, e.g. one carrying a
    ``torch.nn.utils.parametrize`` parametrization, a subclass is made on the fly), so code that reads
    ``in_features`` or a parametrized ``weight`` keeps working and later transforms still find it.
    Weight-side protocol read by compute-side transforms (analog crossbars): :meth:`transformed_weight`
    (the fake-quantized weight), :meth:`transformed_input` (the activation quantizer) and
    :meth:`weight_grid` (scale and levels of the weight grid).
    """

    float_cls: type[nn.Module]
    quant_config: QuantConfig
    w_quant: WeightQuantizer
    a_quant: ActQuantizer | None
    weight: nn.Parameter

    @classmethod
    def from_float(cls, mod: nn.Module, cfg: QuantConfig) -> QuantLayer:
        """Quantized twin of ``mod`` (sharing its parameters); ``cfg`` is the resolved layer config.

        Called on ``QuantLayer`` (or any quantized class) it picks the class for ``type(mod)``."""
        if isinstance(mod, QuantLayer):
            raise TypeError(f"{type(mod).__name__} is already quantized; unwrap it first")
        qcls = quant_class(type(mod))
        if cls is not QuantLayer and not issubclass(qcls, cls):
            raise TypeError(f"{cls.__name__}.from_float expects {cls.float_cls.__name__}, got {type(mod).__name__}")
        q = qcls.__new__(qcls)
        q.__dict__.update(_shallow_state(mod))
        q.quant_config = cfg
        q.w_quant = WeightQuantizer(cfg, _raw_weight(mod))
        dev = _raw_weight(mod).device
        use_a = cfg.a_bits is not None and not isinstance(mod, nn.Embedding)  # an embedding's input is ids
        feat = 1 if isinstance(mod, (nn.Conv1d, nn.Conv2d)) else -1
        q.register_module("a_quant", ActQuantizer(cfg, device=dev, feature_dim=feat) if use_a else None)
        return q

    def to_float(self) -> nn.Module:
        """The float layer back, with the same parameters, attributes and hooks."""
        if type(self).unwrap is not QuantLayer.unwrap:
            raise ConfigError(
                f"{type(self).__name__} carries another transform on top of quantization (e.g. analog "
                f"crossbars); undo that first (cimkit.analog.to_digital or cimkit.undo_)"
            )
        f = self.float_cls.__new__(self.float_cls)
        state = _shallow_state(self)  # type: ignore[arg-type]
        for k in _QUANT_ATTRS:
            state.pop(k, None)
        for k in _QUANT_MODULES:
            state["_modules"].pop(k, None)
        f.__dict__.update(state)
        return f

    def unwrap(self) -> nn.Module:
        """The transform protocol (:mod:`cimkit.nn.transform`): the float layer."""
        return self.to_float()

    @property
    def w_bits(self) -> int:
        return self.w_quant.bits

    @property
    def a_bits(self) -> int | None:
        return None if self.a_quant is None else self.a_quant.bits

    def quantized_weight(self) -> Tensor:
        """The fake-quantized weight this layer computes with (a sparsity mask re-applied)."""
        return remask(self, self.w_quant(self.weight))  # type: ignore[arg-type]

    def transformed_weight(self) -> Tensor:
        """The weight this layer computes with (weight-side protocol): the fake-quantized weight,
        with a sparsity mask re-applied (:mod:`cimkit.nn.weights`)."""
        return remask(self, self.w_quant(self.weight))  # type: ignore[arg-type]

    def transformed_input(self, x: Tensor) -> Tensor:
        """The layer's input as this layer computes with it: through the activation quantizer."""
        return x if self.a_quant is None else self.a_quant(x)

    @torch.no_grad()
    def weight_grid(self) -> tuple[Tensor, int] | None:
        """``(step, levels)``: the quantized weight of output channel ``c`` is ``k · step[c]`` with
        integer ``|k| <= levels`` (``step`` has shape ``(C,)`` or ``(1,)``, in the weight's dtype).
        Affine grids give their scale and the largest ``|code - zero_point|``; binary/ternary give
        ``α`` and 1. Group-wise grids (several steps per output channel) give None: no single step
        per column exists, so a crossbar maps such weights by their abs-max like float weights."""
        wq, w = self.w_quant, self.weight
        if wq.grouped:
            return None
        if wq.mode is not WMode.AFFINE:
            _, scale = wq._ternary_binary(w)
            return scale.detach().to(w.dtype).reshape(-1), 1
        scale, zp = wq._affine_params(w)
        span = torch.maximum((wq.qmax - zp).abs(), (wq.qmin - zp).abs())  # (C,)
        return scale.detach().to(w.dtype).reshape(-1), int(span.max())

    def _quant_input(self, x: Tensor) -> Tensor:
        return x if self.a_quant is None else self.a_quant(x)

    def extra_repr(self) -> str:
        base = self.float_cls.extra_repr(self)  # type: ignore[arg-type]
        return f"{base}, {self.quant_config.label()}"


def _raw_weight(mod: nn.Module) -> Tensor:
    w = mod.weight
    if not isinstance(w, Tensor):
        raise ConfigError(f"{type(mod).__name__} has no weight tensor to quantize")
    return w


class _LinearOps:
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.transformed_input(x), self.transformed_weight(), self.bias)  # type: ignore[attr-defined]


class _ConvOps:
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.transformed_input(x), self.transformed_weight(), self.bias)  # type: ignore[attr-defined]


class _EmbeddingOps:
    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self.transformed_weight(), self.padding_idx, self.max_norm,  # type: ignore[attr-defined]
                           self.norm_type, self.scale_grad_by_freq, self.sparse)  # type: ignore[attr-defined]  # fmt: skip


class QuantLinear(QuantLayer, _LinearOps, nn.Linear):
    float_cls = nn.Linear


class QuantConv1d(QuantLayer, _ConvOps, nn.Conv1d):
    float_cls = nn.Conv1d


class QuantConv2d(QuantLayer, _ConvOps, nn.Conv2d):
    float_cls = nn.Conv2d


class QuantEmbedding(QuantLayer, _EmbeddingOps, nn.Embedding):
    """An embedding table with quantized rows (one grid per row with ``per_channel``); the lookup
    stays a lookup (digital on CIM hardware), its input (token ids) is never quantized."""

    float_cls = nn.Embedding


QUANT_CLASSES: dict[type[nn.Module], type[QuantLayer]] = {
    nn.Linear: QuantLinear,
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Embedding: QuantEmbedding,
}
FLOAT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def quant_class(src: type[nn.Module]) -> type[QuantLayer]:
    """The quantized class for layer class ``src``: ``QuantLinear`` for ``nn.Linear``; for a subclass
    of ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` a subclass of it made once and cached."""
    if src in QUANT_CLASSES:
        return QUANT_CLASSES[src]
    if issubclass(src, QuantLayer):
        raise TypeError(f"{src.__name__} is already quantized")
    ops: type | None = None
    if issubclass(src, nn.Linear):
        ops = _LinearOps
    elif issubclass(src, (nn.Conv1d, nn.Conv2d)):
        ops = _ConvOps
    elif issubclass(src, nn.Embedding):
        ops = _EmbeddingOps
    if ops is None:
        raise ConfigError(f"quantize_: {src.__name__} is not an nn.Linear / nn.Conv1d / nn.Conv2d / nn.Embedding layer")
    cls = type(f"Quant{src.__name__}", (QuantLayer, ops, src), {"float_cls": src, "__module__": __name__})
    QUANT_CLASSES[src] = cls  # type: ignore[assignment]
    return cls  # type: ignore[return-value]


def is_quantizable(m: nn.Module) -> bool:
    """An ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` (or subclass) or a cimkit quantized layer."""
    return isinstance(m, (FLOAT_TYPES, QuantLayer))


__all__ = [
    "FLOAT_TYPES", "QUANT_CLASSES", "QuantConv1d", "QuantConv2d", "QuantEmbedding", "QuantLayer", "QuantLinear",
    "is_quantizable", "quant_class",
]  # fmt: skip
