"""BitLinear: ternary weights and 8-bit per-token activations (BitNet b1.58), as a reversible transform.

Ma et al., "The Era of 1-bit LLMs: All Large Language Models are in 1.58 Bits", arXiv 2402.17764
(2024), building on Wang et al., "BitNet", arXiv 2310.11453 (2023); used in every projection of the
MatMul-free LM (Zhu et al., arXiv 2406.02528, 2024, "FusedBitLinear"). A BitLinear layer computes

    y = Q_w(W) · Q_a(Norm(x)) + b,

* ``Norm``: RMSNorm over the input features, ``x / sqrt(mean(x²) + ε) · g`` with a learned gain ``g``
  (initialized to 1), so that every token reaches the activation quantizer at the same scale;
* ``Q_a``: per-token abs-max quantization to ``a_bits`` (8): ``Q_a(x) = round(x · q / γ) · γ / q`` with
  ``γ = max |x|`` over the token's features and ``q = 2^(a_bits-1) - 1`` (127), the grid of the
  authors' training code (:func:`cimkit.quant.functional.fake_quantize_per_token`);
* ``Q_w``: absmean ternary weights, ``Q_w(W) = γ_w · RoundClip(W / γ_w, -1, 1)`` with
  ``γ_w = mean |W|`` over the whole matrix (one scale per tensor, as the paper; ``per_channel``
  takes one per output row), :func:`cimkit.quant.functional.absmean_ternarize`.

Gradients pass straight through both quantizers (identity straight-through estimators, as in the
authors' code; written ``Q(x) + (x - x.detach())`` so the forward value is exactly ``Q(x)``). The
layer is an ``nn.Linear`` (made by :func:`bitlinear_` from any ``nn.Linear``, sharing its
parameters; ``unwrap()`` gives the plain layer back, ``cimkit.undo_`` the plain model) and speaks
the weight-side protocol (``transformed_weight``, ``transformed_input``, ``weight_grid``), so mapping
it onto crossbars programs exactly the ternary levels and feeds the tiles its quantized tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.analog.layers import AnalogLayer
from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.nn.adapters import standardize_
from cimkit.nn.transform import register_transform
from cimkit.nn.walk import FilterFn, select, set_module
from cimkit.nn.weights import remask
from cimkit.quant.functional import absmean_ternarize, fake_quantize_per_token
from cimkit.quant.layers import QuantLayer

__all__ = ["BitConfig", "BitLayer", "BitLinear", "RMSNorm", "bit_class", "bit_layers", "bitlinear_", "describe"]


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x², -1) + eps) · weight`` over the last dimension (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        r = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return x * r * self.weight  # (..., dim)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps:g}"


@dataclass
class BitConfig(Config):
    """Which Linear layers become BitLinear and how (see the module docstring).

    ``a_bits``: activation bits (per token, abs-max; 2-16). ``norm``: RMSNorm before the activation
    quantizer (BitNet's "LN before quantization"; ``eps`` its epsilon). ``per_channel``: one weight
    scale per output row instead of one per tensor. ``include`` / ``skip``: layer-name patterns
    (exact, glob, ``@first``, ``@last``); by default every Linear but the last (the LM or
    classifier head stays in high precision, as in BitNet).
    """

    a_bits: int = 8
    norm: bool = True
    eps: float = 1e-6
    per_channel: bool = False
    include: list[str] = field(default_factory=lambda: ["*"])
    skip: list[str] = field(default_factory=lambda: ["@last"])

    def __post_init__(self) -> None:
        check_range("a_bits", self.a_bits, 2, 16)
        check_range("eps", self.eps, 0.0, lo_open=True)
        for name in ("include", "skip"):
            v = getattr(self, name)
            if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
                raise ConfigError(f"{name}: expected a list of layer-name patterns, got {v!r}")


class BitLayer:
    """Mixin of BitLinear layers (``isinstance(m, BitLayer)``); see the module docstring."""

    float_cls: type[nn.Module]
    bit_config: BitConfig
    weight: nn.Parameter
    bias: nn.Parameter | None

    @classmethod
    def from_linear(cls, mod: nn.Linear, cfg: BitConfig) -> BitLayer:
        """The BitLinear twin of ``mod`` (sharing its parameters), with a fresh RMSNorm."""
        if isinstance(mod, BitLayer):
            raise ConfigError(f"{type(mod).__name__} is already a BitLinear layer")
        bcls = bit_class(type(mod))
        b = bcls.__new__(bcls)
        b.__dict__.update({k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in mod.__dict__.items()})
        b.bit_config = cfg
        w = mod.weight
        norm = RMSNorm(mod.in_features, cfg.eps).to(device=w.device, dtype=w.dtype) if cfg.norm else None
        b.register_module("norm", norm)  # type: ignore[attr-defined]
        return b

    def unwrap(self) -> nn.Module:
        """The plain layer (same parameters; the RMSNorm is dropped)."""
        f = self.float_cls.__new__(self.float_cls)
        state = {k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in self.__dict__.items()}
        state.pop("bit_config", None)
        state["_modules"].pop("norm", None)
        f.__dict__.update(state)
        return f

    # ------------------------------------------------------------------ the weight-side protocol

    def ternary(self) -> tuple[Tensor, Tensor]:
        """``(codes, γ)``: codes in {-1, 0, 1} (shape of the weight), ``γ`` of shape ``(1,)`` or ``(C,)``."""
        return absmean_ternarize(self.weight, self.bit_config.per_channel)

    def transformed_weight(self) -> Tensor:
        """``γ · codes`` with a straight-through gradient (a sparsity mask re-applied)."""
        w = self.weight
        q, g = self.ternary()
        value = q * (g.to(w.dtype).reshape(-1, 1) if g.numel() > 1 else g.to(w.dtype))  # (out, in)
        return remask(self, value + (w - w.detach()))  # type: ignore[arg-type]  # exact value, identity gradient

    def transformed_input(self, x: Tensor) -> Tensor:
        """``Q_a(Norm(x))``: the per-token quantized, normalized input."""
        norm = self._modules.get("norm")  # type: ignore[attr-defined]
        if norm is not None:
            x = norm(x)
        return fake_quantize_per_token(x, self.bit_config.a_bits, symmetric=True, dim=-1)

    @torch.no_grad()
    def weight_grid(self) -> tuple[Tensor, int]:
        """``(γ, 1)``: every weight is ``k · γ`` with ``k`` in {-1, 0, 1}."""
        _, g = self.ternary()
        return g.detach().to(self.weight.dtype).reshape(-1), 1

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.transformed_input(x), self.transformed_weight(), self.bias)

    def extra_repr(self) -> str:
        c = self.bit_config
        return f"{self.float_cls.extra_repr(self)}, ternary weights, A{c.a_bits}/token" + (", RMSNorm" if c.norm else "")  # type: ignore[arg-type]


_CLASSES: dict[type[nn.Module], type[BitLayer]] = {}


def bit_class(src: type[nn.Module]) -> type[BitLayer]:
    """The BitLinear class for Linear class ``src`` (``BitLinear`` for ``nn.Linear``), made once."""
    if src in _CLASSES:
        return _CLASSES[src]
    if not issubclass(src, nn.Linear) or issubclass(src, (BitLayer, QuantLayer, AnalogLayer)):
        raise ConfigError(f"bitlinear_: {src.__name__} is not a plain nn.Linear layer")
    cls = type(f"Bit{src.__name__}", (BitLayer, src), {"float_cls": src, "__module__": __name__})
    _CLASSES[src] = cls
    return cls


BitLinear = bit_class(nn.Linear)


@register_transform(BitConfig, "bitlinear", "ternary BitLinear layers (BitNet b1.58): absmean weights, per-token "
                    "8-bit activations, RMSNorm before quantization (BitConfig)")  # fmt: skip
def bitlinear_(model: nn.Module, config: BitConfig | None = None, filter_fn: FilterFn | None = None) -> nn.Module:
    """Turn the selected ``nn.Linear`` layers of ``model`` into BitLinear layers, in place; returns
    ``model``. Layers that are already quantized, analog or BitLinear raise
    :class:`~cimkit.errors.ConfigError` (undo those transforms first, or skip the layer)."""
    cfg = config or BitConfig()
    model = standardize_(model)
    refs = select(model, nn.Linear, include=cfg.include, skip=cfg.skip, filter_fn=filter_fn)
    if not refs:
        raise ConfigError(f"bitlinear_: no nn.Linear layer matches include={cfg.include} skip={cfg.skip}")
    for ref in refs:
        if isinstance(ref.module, (BitLayer, QuantLayer, AnalogLayer)):
            raise ConfigError(f"bitlinear_: layer '{ref.name}' is already transformed ({type(ref.module).__name__}); "
                              f"apply bitlinear first, or skip it")  # fmt: skip
    for ref in refs:
        new = BitLayer.from_linear(ref.module, cfg)  # type: ignore[arg-type]
        if not ref.name:
            return new  # type: ignore[return-value]
        set_module(model, ref.name, new)  # type: ignore[arg-type]
    return model


def bit_layers(model: nn.Module) -> list[tuple[str, BitLayer]]:
    """``(name, layer)`` of every BitLinear layer of ``model`` (analog ones included)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BitLayer)]


def describe(model: nn.Module) -> dict[str, Any]:
    """Counts for a report: BitLinear layers and their ternary weights."""
    layers = bit_layers(model)
    return {"bit_layers": len(layers), "ternary_weights": int(sum(m.weight.numel() for _, m in layers))}
