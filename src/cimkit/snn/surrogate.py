"""Surrogate gradients of the spike nonlinearity.

A spike is the Heaviside step of the membrane's distance to threshold, ``S = H(U - θ)`` with
``H(x) = 1 if x > 0 else 0`` (strictly greater, as snnTorch). Its derivative is zero almost
everywhere, so training by backpropagation through time replaces ``dS/dx`` by a smooth surrogate
``σ'(x)`` (Neftci, Mostafa & Zenke, IEEE Signal Process. Mag. 36(6), 2019). The forward pass is
always the exact step. Registered surrogates (``cimkit list surrogates``), with ``x = U - θ``:

* ``atan(alpha=2)``: ``σ'(x) = (α/2) / (1 + (π α x / 2)²)``, the derivative of
  ``arctan(π α x / 2)/π + 1/2`` (Fang et al., ICCV 2021; snnTorch's default);
* ``fast_sigmoid(slope=25)``: ``σ'(x) = 1 / (k |x| + 1)²`` (Zenke & Ganguli, Neural Comput. 30,
  2018, "SuperSpike"; the snnTorch tutorials' choice);
* ``sigmoid(slope=25)``: ``σ'(x) = k e^{-k x} / (1 + e^{-k x})²``;
* ``straight_through``: ``σ'(x) = 1`` (Bengio et al. 2013);
* ``custom(fn)``: any ``fn(x) -> σ'(x)`` (elementwise, same shape).

A :class:`Surrogate` is called on ``x`` to spike with its gradient (``surrogate(x)``); the neuron
dynamics (:mod:`cimkit.snn.dynamics`) use :meth:`Surrogate.derivative` directly in their
hand-written backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cimkit.config import check_range
from cimkit.errors import ConfigError
from cimkit.registry import Registry

__all__ = ["SURROGATES", "Surrogate", "atan", "custom", "fast_sigmoid", "make_surrogate", "sigmoid",
           "spike", "straight_through"]  # fmt: skip


class Surrogate:
    """A spike function: the exact step forward, ``derivative(x)`` backward (see the module docstring)."""

    name: str = "surrogate"

    def __init__(self, **params: float) -> None:
        self.params = dict(params)

    def derivative(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative_(self, x: Tensor) -> Tensor:
        """:meth:`derivative` allowed to overwrite ``x`` (a temporary): fewer passes and buffers."""
        return self.derivative(x)

    def __call__(self, x: Tensor) -> Tensor:
        return spike(x, self)

    def describe(self) -> dict[str, Any]:
        """JSON-able ``{"name", **params}``."""
        return {"name": self.name, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name}({args})"


class _ATan(Surrogate):
    name = "atan"

    def __init__(self, alpha: float = 2.0) -> None:
        check_range("alpha", alpha, 0.0, lo_open=True)
        super().__init__(alpha=float(alpha))
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        a = self.alpha
        return (a / 2.0) / (1.0 + (0.5 * math.pi * a * x) ** 2)

    def derivative_(self, x: Tensor) -> Tensor:
        return x.mul_(0.5 * math.pi * self.alpha).square_().add_(1.0).reciprocal_().mul_(self.alpha / 2.0)


class _FastSigmoid(Surrogate):
    name = "fast_sigmoid"

    def __init__(self, slope: float = 25.0) -> None:
        check_range("slope", slope, 0.0, lo_open=True)
        super().__init__(slope=float(slope))
        self.slope = float(slope)

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / (self.slope * x.abs() + 1.0) ** 2

    def derivative_(self, x: Tensor) -> Tensor:
        return x.abs_().mul_(self.slope).add_(1.0).pow_(-2)


class _Sigmoid(Surrogate):
    name = "sigmoid"

    def __init__(self, slope: float = 25.0) -> None:
        check_range("slope", slope, 0.0, lo_open=True)
        super().__init__(slope=float(slope))
        self.slope = float(slope)

    def derivative(self, x: Tensor) -> Tensor:
        z = self.slope * x
        return self.slope * torch.sigmoid(z) * torch.sigmoid(-z)  # = k e^{-kx} / (1 + e^{-kx})², no overflow


class _StraightThrough(Surrogate):
    name = "straight_through"

    def derivative(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)


class _Custom(Surrogate):
    def __init__(self, fn: Callable[[Tensor], Tensor], name: str = "custom") -> None:
        if not callable(fn):
            raise ConfigError(f"custom surrogate: expected a callable fn(x) -> dS/dx, got {fn!r}")
        super().__init__()
        self.fn = fn
        self.name = name

    def derivative(self, x: Tensor) -> Tensor:
        d = self.fn(x)
        if not isinstance(d, Tensor) or d.shape != x.shape:
            raise ConfigError(f"custom surrogate '{self.name}': fn(x) must return a tensor of x's shape {tuple(x.shape)}")
        return d


def atan(alpha: float = 2.0) -> Surrogate:
    """Arctangent surrogate ``(α/2) / (1 + (π α x / 2)²)``."""
    return _ATan(alpha)


def fast_sigmoid(slope: float = 25.0) -> Surrogate:
    """Fast-sigmoid surrogate ``1 / (k |x| + 1)²``."""
    return _FastSigmoid(slope)


def sigmoid(slope: float = 25.0) -> Surrogate:
    """Logistic surrogate ``k e^{-kx} / (1 + e^{-kx})²``."""
    return _Sigmoid(slope)


def straight_through() -> Surrogate:
    """Straight-through estimator: ``dS/dx = 1``."""
    return _StraightThrough()


def custom(fn: Callable[[Tensor], Tensor], name: str = "custom") -> Surrogate:
    """A user-defined surrogate: ``fn(x)`` returns ``dS/dx`` elementwise."""
    return _Custom(fn, name)


SURROGATES: Registry[Callable[..., Surrogate]] = Registry("surrogate")
SURROGATES.add("atan", atan, "(α/2)/(1+(παx/2)²), alpha=2 (snnTorch's default)")
SURROGATES.add("fast_sigmoid", fast_sigmoid, "1/(k|x|+1)², slope=25 (SuperSpike; snnTorch tutorials)")
SURROGATES.add("sigmoid", sigmoid, "k e^{-kx}/(1+e^{-kx})², slope=25")
SURROGATES.add("straight_through", straight_through, "dS/dx = 1")


def make_surrogate(spec: Surrogate | str | None = None, **params: float) -> Surrogate:
    """A :class:`Surrogate` from an instance, a registered name (``None`` = ``atan``) and its parameters."""
    if isinstance(spec, Surrogate):
        if params:
            raise ConfigError("surrogate: parameters given with a Surrogate instance; pass one or the other")
        return spec
    factory = SURROGATES.get(spec or "atan")
    try:
        return factory(**params)
    except TypeError:
        raise ConfigError(f"surrogate '{spec}': unknown parameter(s) {sorted(params)}") from None


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, surrogate: Surrogate) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None


def spike(x: Tensor, surrogate: Surrogate) -> Tensor:
    """``H(x)`` (1.0 where ``x > 0``) with ``surrogate.derivative(x)`` as its gradient."""
    return _Spike.apply(x, surrogate)
