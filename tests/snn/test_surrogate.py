"""Surrogate gradients against their formulas (and the formulas against finite differences of the
smooth functions they are the derivatives of)."""

from __future__ import annotations

import math

import pytest
import torch

from cimkit.errors import ConfigError
from cimkit.snn import atan, custom, fast_sigmoid, make_surrogate, sigmoid, straight_through

X = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64)


def grad_of(s: object, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    y = s(x)  # type: ignore[operator]
    assert torch.equal(y.detach(), (x > 0).to(x.dtype))  # the forward is the exact step
    (g,) = torch.autograd.grad(y.sum(), x)
    return g


@pytest.mark.parametrize("alpha", [1.0, 2.0, 5.0])
def test_atan(alpha: float) -> None:
    expect = (alpha / 2) / (1 + (math.pi / 2 * alpha * X) ** 2)
    assert torch.allclose(grad_of(atan(alpha), X), expect, rtol=1e-12)
    # it is the derivative of arctan(π α x / 2) / π + 1/2 (central differences)
    h = 1e-6
    f = lambda v: torch.atan(math.pi / 2 * alpha * v) / math.pi + 0.5  # noqa: E731
    assert torch.allclose((f(X + h) - f(X - h)) / (2 * h), expect, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("slope", [5.0, 25.0])
def test_fast_sigmoid(slope: float) -> None:
    expect = 1.0 / (slope * X.abs() + 1.0) ** 2
    assert torch.allclose(grad_of(fast_sigmoid(slope), X), expect, rtol=1e-12)
    # derivative of x / (1 + k|x|) / ... : d/dx [x / (1 + k|x|)] = 1 / (1 + k|x|)²
    h = 1e-7
    f = lambda v: v / (1 + slope * v.abs())  # noqa: E731
    xs = X[X.abs() > 1e-3]
    assert torch.allclose((f(xs + h) - f(xs - h)) / (2 * h), 1.0 / (slope * xs.abs() + 1.0) ** 2, rtol=1e-5)


def test_sigmoid_and_straight_through_and_custom() -> None:
    k = 25.0
    e = torch.exp(-k * X)
    assert torch.allclose(grad_of(sigmoid(k), X), k * e / (1 + e) ** 2, rtol=1e-9, atol=1e-300)
    assert torch.equal(grad_of(straight_through(), X), torch.ones_like(X))
    tri = custom(lambda v: (1 - v.abs()).clamp(min=0), "triangle")
    assert torch.equal(grad_of(tri, X), (1 - X.abs()).clamp(min=0))


def test_make_surrogate_and_errors() -> None:
    assert make_surrogate(None).describe() == {"name": "atan", "alpha": 2.0}
    assert make_surrogate("fast_sigmoid", slope=10).describe() == {"name": "fast_sigmoid", "slope": 10.0}
    with pytest.raises(ConfigError, match="did you mean"):
        make_surrogate("fast_sigmod")
    with pytest.raises(ConfigError, match="slope"):
        fast_sigmoid(0.0)
    with pytest.raises(ConfigError, match="shape"):
        grad_of(custom(lambda v: v.sum()), X)


def test_in_place_derivatives_equal_the_formulas() -> None:
    for s in (atan(), atan(3.0), fast_sigmoid(), fast_sigmoid(7.0), sigmoid(), straight_through()):
        assert torch.allclose(s.derivative_(X.clone()), s.derivative(X), rtol=1e-12), s
