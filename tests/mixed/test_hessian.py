"""Hutchinson trace and power iteration against exactly known Hessians."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError, DataError
from cimkit.mixed.hessian import hessian_trace, top_eigenvalues

torch.set_num_threads(1)


class TwoBranch(nn.Module):
    """f(x) = A x₁ + B x₂: with the loss ½·mean_n ||f − y||² the Hessian over (A, B) is constant.

    With C = XᵀX/N split into blocks by (x₁, x₂) and weights flattened row-major:
    H_AA = I_k ⊗ C₁₁, H_BB = I_k ⊗ C₂₂, H_AB = I_k ⊗ C₁₂ (cross-layer terms are nonzero).
    """

    def __init__(self, d1: int, d2: int, k: int) -> None:
        super().__init__()
        self.d1 = d1
        self.a = nn.Linear(d1, k, bias=False)
        self.b = nn.Linear(d2, k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x[:, : self.d1]) + self.b(x[:, self.d1 :])


def half_sq(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).sum(dim=1).mean()


def _quadratic_case(seed: int = 0, n: int = 96, d1: int = 6, d2: int = 5, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    model = TwoBranch(d1, d2, k)
    scales = torch.tensor([3.0, 1.5, 1.0, 0.8, 0.6, 0.5, 1.2, 1.0, 0.7, 0.5, 0.3])[: d1 + d2]
    x = torch.randn(n, d1 + d2, generator=g) * scales  # (N, d)
    x[:, d1] += 0.5 * x[:, 0]  # correlate the branches so H_AB ≠ 0
    y = torch.randn(n, k, generator=g)
    c = (x.T @ x / n).double()  # (d, d)
    return model, x, y, c, d1, k


def _hutchinson_var(h_ll: torch.Tensor, h_cross: torch.Tensor) -> float:
    """Var of v_lᵀ(Hv)_l for Rademacher v: 2·Σ_{i≠j} (H_ll)_ij² + ||H_l,rest||_F²."""
    off = (h_ll**2).sum() - (torch.diagonal(h_ll) ** 2).sum()
    return float(2 * off + (h_cross**2).sum())


def test_trace_matches_exact_quadratic_within_statistical_tolerance():
    model, x, y, c, d1, k = _quadratic_case()
    eye = torch.eye(k, dtype=torch.float64)
    blocks = {
        "a": (torch.kron(eye, c[:d1, :d1]), torch.kron(eye, c[:d1, d1:])),
        "b": (torch.kron(eye, c[d1:, d1:]), torch.kron(eye, c[d1:, :d1])),
    }
    n_probes = 300
    info = hessian_trace(
        model, (x, y), loss_fn=half_sq, max_probes=n_probes, tol=1e-12, seed=1, progress=False, batch_size=32
    )
    assert info.names == ["a", "b"]
    assert info.n_probes == n_probes and not info.converged
    for name, (h_ll, h_cross) in blocks.items():
        exact = float(torch.trace(h_ll))
        sd = math.sqrt(_hutchinson_var(h_ll, h_cross) / n_probes)
        # 4 standard deviations of the mean of n_probes i.i.d. estimates (two-sided p ≈ 6e-5)
        assert abs(info.trace[name] - exact) < 4 * sd, (name, info.trace[name], exact, sd)
        # the reported standard error estimates the same spread
        assert 0.6 * sd < info.trace_stderr[name] < 1.5 * sd
        assert info.mean_trace()[name] == pytest.approx(info.trace[name] / info.params[name])


def test_blockwise_trace_has_no_cross_layer_variance():
    model, x, y, c, d1, k = _quadratic_case()
    eye = torch.eye(k, dtype=torch.float64)
    n_probes = 200
    kw = dict(loss_fn=half_sq, max_probes=n_probes, tol=1e-12, seed=4, progress=False)
    block = hessian_trace(model, (x, y), blockwise=True, **kw)
    joint = hessian_trace(model, (x, y), **kw)
    for name, h_ll, h_x in (
        ("a", torch.kron(eye, c[:d1, :d1]), torch.kron(eye, c[:d1, d1:])),
        ("b", torch.kron(eye, c[d1:, d1:]), torch.kron(eye, c[d1:, :d1])),
    ):
        exact = float(torch.trace(h_ll))
        sd_block = math.sqrt(_hutchinson_var(h_ll, h_x * 0) / n_probes)
        assert abs(block.trace[name] - exact) < 4 * sd_block, (name, block.trace[name], exact)
        assert 0.6 * sd_block < block.trace_stderr[name] < 1.5 * sd_block
        assert block.trace_stderr[name] < joint.trace_stderr[name]  # the cross terms only add variance


def test_trace_matches_autograd_hessian_on_nonlinear_net():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    w0, w2 = model[0].weight, model[2].weight

    def loss_of(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ a.T + model[0].bias)
        return torch.nn.functional.cross_entropy(h @ b.T + model[2].bias, y)

    h = torch.autograd.functional.hessian(loss_of, (w0.detach(), w2.detach()))
    n0, n2 = w0.numel(), w2.numel()
    h00 = h[0][0].reshape(n0, n0).double()
    h01 = h[0][1].reshape(n0, n2).double()
    h22 = h[1][1].reshape(n2, n2).double()
    n_probes = 400
    info = hessian_trace(model, (x, y), max_probes=n_probes, tol=1e-12, seed=5, progress=False)
    for name, h_ll, h_x in (("0", h00, h01), ("2", h22, h01.T)):
        exact = float(torch.trace(h_ll))
        sd = math.sqrt(_hutchinson_var(h_ll, h_x) / n_probes)
        assert abs(info.trace[name] - exact) < 4 * sd + 1e-6, (name, info.trace[name], exact, sd)


def test_trace_is_seeded_and_independent_of_batching():
    # float64: the batchings sum the same per-sample terms in different orders; float32 rounding of
    # those sums (up to 96·2^-24 ≈ 6e-6 relative each, Higham's γ_n) could approach rel=1e-5
    model, x, y, *_ = _quadratic_case()
    model, x, y = model.double(), x.double(), y.double()
    kw = dict(loss_fn=half_sq, max_probes=20, tol=1e-12, seed=7, progress=False)
    t1 = hessian_trace(model, (x, y), batch_size=96, **kw)
    t2 = hessian_trace(model, (x, y), batch_size=24, **kw)  # same mean loss, 4 graphs summed
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    t3 = hessian_trace(model, loader, **kw)
    for name in t1.names:
        assert t2.trace[name] == pytest.approx(t1.trace[name], rel=1e-5)
        assert t3.trace[name] == pytest.approx(t1.trace[name], rel=1e-5)
    t4 = hessian_trace(model, (x, y), **{**kw, "seed": 8})
    assert t4.trace["a"] != t1.trace["a"]


def test_trace_stops_on_tolerance():
    model, x, y, *_ = _quadratic_case()
    info = hessian_trace(model, (x, y), loss_fn=half_sq, max_probes=100, min_probes=5, tol=0.02, progress=False)
    assert info.converged
    assert 5 <= info.n_probes < 100
    last, before = info.history[-1], info.history[-2]
    assert max(abs(a - b) / abs(b) for a, b in zip(last, before)) < 0.02


def test_power_iteration_finds_known_top_eigenvalue():
    model, x, y, c, d1, _ = _quadratic_case(n=200)
    exact_a = float(torch.linalg.eigvalsh(c[:d1, :d1]).max())  # eig(I_k ⊗ C₁₁) = eig(C₁₁)
    exact_b = float(torch.linalg.eigvalsh(c[d1:, d1:]).max())
    eig = top_eigenvalues(model, (x, y), loss_fn=half_sq, max_iters=200, tol=1e-6, progress=False)
    assert eig["a"] == pytest.approx(exact_a, rel=1e-3)
    assert eig["b"] == pytest.approx(exact_b, rel=1e-3)
    # also from hessian_trace(eigenvalues=True), sharing the same graph
    info = hessian_trace(
        model, (x, y), loss_fn=half_sq, max_probes=3, eigenvalues=True, eig_tol=1e-6, eig_iters=200, progress=False
    )
    assert info.eigenvalue["a"] == pytest.approx(exact_a, rel=1e-3)
    assert info.eig_iters > 1


def test_trace_on_unlabelled_inputs_uses_model_predictions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    kw = dict(max_probes=8, tol=1e-12, seed=2, progress=False)
    a = hessian_trace(model, x, **kw)
    b = hessian_trace(model, (x, y), **kw)
    assert a.trace == pytest.approx(b.trace, rel=1e-5)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    model[4].bias.requires_grad_(False)
    hessian_trace(model, x, **kw)
    assert [p.requires_grad for p in model.parameters()] == [True] * 5 + [False]  # flags restored
    assert a.n_samples == 32
    assert hessian_trace(model, x, max_samples=10, **kw).n_samples == 10


def test_bad_arguments():
    model, x, y, *_ = _quadratic_case()
    with pytest.raises(ConfigError, match="max_probes"):
        hessian_trace(model, (x, y), max_probes=0, progress=False)
    with pytest.raises(ConfigError, match="unknown layer 'c'"):
        hessian_trace(model, (x, y), layers=["c"], progress=False)
    with pytest.raises(DataError):
        hessian_trace(model, None, progress=False)
