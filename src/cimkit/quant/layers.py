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

import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.quant.config import QuantConfig
from cimkit.quant.quantizers import ActQuantizer, WeightQuantizer

_QUANT_ATTRS = ("quant_config", "w_quant", "a_quant")
_QUANT_MODULES = ("w_quant", "a_quant")


def _shallow_state(mod: nn.Module) -> dict[str, Any]:
    """A copy of ``mod.__dict__`` whose dicts/sets are new containers holding the same objects."""
    return {k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in mod.__dict__.items()}


class QuantLayer:
    """Mixin of the quantized layers (use ``isinstance(m, QuantLayer)``)."""

    float_cls: type[nn.Module]
    quant_config: QuantConfig
    w_quant: WeightQuantizer
    a_quant: ActQuantizer | None
    weight: nn.Parameter

    @classmethod
    def from_float(cls, mod: nn.Module, cfg: QuantConfig) -> QuantLayer:
        """Quantized twin of ``mod`` (sharing its parameters); ``cfg`` is the resolved layer config."""
        if type(mod) is not cls.float_cls:
            raise TypeError(f"{cls.__name__}.from_float expects {cls.float_cls.__name__}, got {type(mod).__name__}")
        q = cls.__new__(cls)
        q.__dict__.update(_shallow_state(mod))
        q.quant_config = cfg
        q.w_quant = WeightQuantizer(cfg, mod.weight)  # type: ignore[arg-type]
        dev = mod.weight.device  # type: ignore[union-attr]
        q.register_module("a_quant", ActQuantizer(cfg, device=dev) if cfg.a_bits is not None else None)
        return q

    def to_float(self) -> nn.Module:
        """The float layer back, with the same parameters, attributes and hooks."""
        f = self.float_cls.__new__(self.float_cls)
        state = _shallow_state(self)  # type: ignore[arg-type]
        for k in _QUANT_ATTRS:
            state.pop(k, None)
        for k in _QUANT_MODULES:
            state["_modules"].pop(k, None)
        f.__dict__.update(state)
        return f

    @property
    def w_bits(self) -> int:
        return self.w_quant.bits

    @property
    def a_bits(self) -> int | None:
        return None if self.a_quant is None else self.a_quant.bits

    def quantized_weight(self) -> Tensor:
        """The fake-quantized weight this layer computes with."""
        return self.w_quant(self.weight)

    def _quant_input(self, x: Tensor) -> Tensor:
        return x if self.a_quant is None else self.a_quant(x)

    def extra_repr(self) -> str:
        base = self.float_cls.extra_repr(self)  # type: ignore[arg-type]
        return f"{base}, {self.quant_config.label()}"


class QuantLinear(QuantLayer, nn.Linear):
    float_cls = nn.Linear

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self._quant_input(x), self.w_quant(self.weight), self.bias)


class QuantConv1d(QuantLayer, nn.Conv1d):
    float_cls = nn.Conv1d

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self._quant_input(x), self.w_quant(self.weight), self.bias)


class QuantConv2d(QuantLayer, nn.Conv2d):
    float_cls = nn.Conv2d

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self._quant_input(x), self.w_quant(self.weight), self.bias)


QUANT_CLASSES: dict[type[nn.Module], type[QuantLayer]] = {
    nn.Linear: QuantLinear,
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
}
FLOAT_TYPES = tuple(QUANT_CLASSES)


def is_quantizable(m: nn.Module) -> bool:
    """A float Linear/Conv1d/Conv2d (exact type) or a cimkit quantized layer."""
    return type(m) in QUANT_CLASSES or isinstance(m, QuantLayer)


__all__ = ["FLOAT_TYPES", "QUANT_CLASSES", "QuantConv1d", "QuantConv2d", "QuantLayer", "QuantLinear", "is_quantizable"]
