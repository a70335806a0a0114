"""Property tests (Hypothesis) and hand-checked cases for the quantization math."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cimkit.errors import ConfigError
from cimkit.quant import functional as QF
from cimkit.quant.observers import Observer, observe_weight

torch.set_num_threads(1)
SETTINGS = settings(max_examples=60, deadline=None)


def _tensor(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


grids = st.tuples(
    st.integers(2, 16),  # bits
    st.sampled_from(["symmetric", "asymmetric", "unsigned"]),
    st.floats(1e-3, 10.0),  # scale
    st.integers(0, 2**31 - 1),  # seed
)


def _grid(bits: int, kind: str, scale: float) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    if kind == "symmetric":
        qmin, qmax = QF.qrange(bits, signed=True)
        zp = 0
    elif kind == "unsigned":
        qmin, qmax = QF.qrange(bits, signed=False)
        zp = 0
    else:
        qmin, qmax = QF.qrange(bits, signed=False)
        zp = qmax // 3
    return torch.tensor([scale]), torch.tensor([float(zp)]), qmin, qmax


@SETTINGS
@given(grids)
def test_roundtrip_error_within_half_step_inside_and_clipped_outside(grid) -> None:
    bits, kind, scale, seed = grid
    s, z, qmin, qmax = _grid(bits, kind, scale)
    lo, hi = (qmin - z.item()) * scale, (qmax - z.item()) * scale
    x = _tensor(seed, (512,), scale=(hi - lo) * 0.7) + (lo + hi) / 2  # some values fall outside
    q = QF.quantize(x, s, z, qmin, qmax)
    assert torch.equal(q, q.round()) and q.min() >= qmin and q.max() <= qmax
    y = QF.dequantize(q, s, z)
    inside = (x >= lo) & (x <= hi)
    tol = 1e-5 * max(abs(lo), abs(hi), 1.0)
    assert ((y - x).abs()[inside] <= scale / 2 + tol).all()
    assert torch.allclose(y[x > hi], torch.full_like(y[x > hi], hi), rtol=1e-6, atol=tol)
    assert torch.allclose(y[x < lo], torch.full_like(y[x < lo], lo), rtol=1e-6, atol=tol)


@SETTINGS
@given(grids)
def test_fake_quantize_is_idempotent(grid) -> None:
    bits, kind, scale, seed = grid
    s, z, qmin, qmax = _grid(bits, kind, scale)
    x = _tensor(seed, (256,), scale=scale * 2 ** (bits - 1))
    once = QF.fake_quantize(x, s, z, qmin, qmax)
    assert torch.equal(QF.fake_quantize(once, s, z, qmin, qmax), once)


@SETTINGS
@given(grids, st.booleans())
def test_inference_fake_quantize_equals_the_autograd_forward(grid, per_channel: bool) -> None:
    # without autograd, fake_quantize skips the straight-through mask: the values must be bitwise
    # those of the differentiable forward, in a new tensor (the input untouched)
    bits, kind, scale, seed = grid
    s, z, qmin, qmax = _grid(bits, kind, scale)
    x = _tensor(seed, (6, 5, 7), scale=scale * 2**bits)
    axis = None
    if per_channel:
        axis = 0
        s = s * torch.linspace(0.5, 1.5, 6)
        z = z.expand(6).clone()
    x0 = x.clone()
    with torch.no_grad():
        fast = QF.fake_quantize(x, s, z, qmin, qmax, axis)
    ref = QF.fake_quantize(x.clone().requires_grad_(), s, z, qmin, qmax, axis).detach()
    assert torch.equal(fast, ref)
    assert torch.equal(x, x0) and fast.data_ptr() != x.data_ptr()


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 6), st.integers(2, 8), st.booleans(), st.integers(0, 10**6))
def test_per_channel_scales_shape_and_channel_extremes(c: int, k: int, bits: int, symmetric: bool, seed: int) -> None:
    w = _tensor(seed, (c, 3, k), scale=0.1)
    s, z, qmin, qmax = observe_weight(w, "minmax", bits, per_channel=True, symmetric=symmetric)
    assert s.shape == (c,) and z.shape == (c,)
    assert (qmin, qmax) == (QF.qrange(bits, signed=True) if symmetric else QF.qrange(bits, signed=False))
    wq = QF.fake_quantize_weight(w, bits, per_channel=True, symmetric=symmetric)
    assert wq.shape == w.shape
    # every channel's largest magnitude is representable (min/max grid): its error is tiny
    idx = w.abs().reshape(c, -1).argmax(dim=1)
    err = (wq - w).reshape(c, -1).gather(1, idx[:, None]).abs().squeeze(1)
    assert (err <= 1e-5 + s * 1e-3).all() if symmetric else (err <= s / 2 + 1e-6).all()
    s_t, _, _, _ = observe_weight(w, "minmax", bits, per_channel=False, symmetric=symmetric)
    assert s_t.shape == (1,)


def test_qrange_values_and_errors() -> None:
    assert QF.qrange(8, signed=True) == (-127, 127)
    assert QF.qrange(8, signed=True, narrow=False) == (-128, 127)
    assert QF.qrange(4, signed=False) == (0, 15)
    assert QF.qrange(2, signed=True) == (-1, 1)
    with pytest.raises(ConfigError):
        QF.qrange(17, signed=True)


def test_ste_gradient_hand_checked() -> None:
    s, z = torch.tensor([0.5]), torch.tensor([0.0])
    x = torch.tensor([0.2, 0.9, -0.4, 3.0, -3.0], requires_grad=True)
    y = QF.fake_quantize(x, s, z, -7, 7)  # real range [-3.5, 3.5]
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(5))
    x2 = torch.tensor([0.2, 5.0, -5.0], requires_grad=True)
    QF.fake_quantize(x2, s, z, -7, 7).sum().backward()
    assert torch.equal(x2.grad, torch.tensor([1.0, 0.0, 0.0]))  # blocked outside the range


def test_lsq_step_size_gradient_hand_checked() -> None:
    # Esser et al. 2020 eq. 3 with s = 1, 2-bit signed narrow grid [-1, 1]:
    # x = 0.3 inside -> round(0.3) - 0.3 = -0.3; x = -2 below -> qmin = -1; x = 5 above -> qmax = 1
    x = torch.tensor([0.3, -2.0, 5.0])
    for i, expected in enumerate([-0.3, -1.0, 1.0]):
        s = torch.tensor([1.0], requires_grad=True)
        QF.fake_quantize(x[i : i + 1], s, torch.zeros(1), -1, 1).sum().backward()
        assert s.grad.item() == pytest.approx(expected, abs=1e-6)
    # gradient scaling multiplies the step-size gradient by g and leaves the value unchanged
    s = torch.tensor([2.0], requires_grad=True)
    g = QF.lsq_grad_scale(100, 7)
    assert g == pytest.approx(1 / math.sqrt(700))
    sg = QF.grad_scale(s, g)
    assert sg.item() == pytest.approx(2.0)
    x = torch.tensor([3.3])  # x/s = 1.65 -> round 2 -> d/ds = 2 - 1.65 = 0.35
    QF.fake_quantize(x, sg, torch.zeros(1), -7, 7).sum().backward()
    assert s.grad.item() == pytest.approx(0.35 * g, rel=1e-5)


@SETTINGS
@given(st.integers(2, 8), st.integers(0, 10**6), st.floats(0.01, 2.0))
def test_lsq_gradients_finite(bits: int, seed: int, scale: float) -> None:
    x = _tensor(seed, (64,), scale=3.0).requires_grad_(True)
    s = torch.tensor([scale], requires_grad=True)
    qmin, qmax = QF.qrange(bits, signed=True)
    y = QF.fake_quantize(x, QF.grad_scale(s, QF.lsq_grad_scale(64, qmax)), torch.zeros(1), qmin, qmax)
    (y * torch.linspace(-1, 1, 64)).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(s.grad).all()


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 20), st.integers(0, 10**6), st.booleans())
def test_binary_weights_take_only_plus_minus_alpha(c: int, k: int, seed: int, per_channel: bool) -> None:
    w = _tensor(seed, (c, k), scale=0.2)
    w[0, 0] = 0.0  # sign(0) must still be a binary value
    y = QF.binary_fake(w, per_channel=per_channel)
    alpha = w.abs().mean(dim=1, keepdim=True) if per_channel else w.abs().mean().expand(c, 1)
    assert torch.allclose(y.abs(), alpha.expand_as(y), rtol=1e-6)
    q, a = QF.binarize(w, per_channel)
    assert set(q.unique().tolist()) <= {-1.0, 1.0}
    assert torch.allclose(a, alpha.reshape(-1)[: a.numel()])
    assert torch.equal(torch.sign(y[w != 0]), torch.sign(w[w != 0]))


@SETTINGS
@given(st.integers(1, 8), st.integers(2, 30), st.integers(0, 10**6), st.booleans())
def test_twn_ternary_values_and_threshold(c: int, k: int, seed: int, per_channel: bool) -> None:
    w = _tensor(seed, (c, k), scale=0.3)
    q, alpha = QF.twn_ternarize(w, per_channel)
    assert set(q.unique().tolist()) <= {-1.0, 0.0, 1.0}
    a = w.abs()
    delta = 0.7 * (a.mean(dim=1, keepdim=True) if per_channel else a.mean())
    assert torch.equal(q != 0, a > delta)
    y = QF.twn_fake(w, per_channel)
    al = alpha.reshape(-1, 1) if per_channel else alpha.reshape(1, 1)
    assert torch.allclose(y, q * al)
    # alpha is the mean magnitude of the kept weights (TWN eq. 10)
    kept = (a * (q != 0)).sum(dim=1) / (q != 0).sum(dim=1).clamp_min(1)
    if per_channel:
        assert torch.allclose(alpha[(q != 0).any(dim=1)], kept[(q != 0).any(dim=1)], rtol=1e-5)


@SETTINGS
@given(st.integers(1, 8), st.integers(2, 30), st.integers(0, 10**6))
def test_absmean_ternary_values(c: int, k: int, seed: int) -> None:
    w = _tensor(seed, (c, k), scale=0.3)
    y = QF.absmean_fake(w)
    gamma = w.abs().mean()
    vals = set((y / gamma).round().unique().tolist())
    assert vals <= {-1.0, 0.0, 1.0}
    assert torch.allclose(y, torch.clamp(torch.round(w / gamma), -1, 1) * gamma, rtol=1e-6)


def test_binary_ternary_straight_through_gradient() -> None:
    w = torch.tensor([[0.5, -2.0, 0.1, -0.3]], requires_grad=True)
    QF.binary_fake(w).sum().backward()
    assert torch.equal(w.grad, torch.tensor([[1.0, 0.0, 1.0, 1.0]]))  # clipped at |w| > 1
    w.grad = None
    QF.twn_fake(w).sum().backward()
    assert torch.equal(w.grad, torch.tensor([[1.0, 0.0, 1.0, 1.0]]))


def test_observers_percentile_and_mse() -> None:
    x = _tensor(1, (20000,))
    x[0] = 50.0  # one outlier
    mm, pc, mse = Observer("minmax"), Observer("percentile", percentile=99.9), Observer("mse")
    for o in (mm, pc, mse):
        o.update(x[:10000])
        o.update(x[10000:])
    assert mm.hi.item() == pytest.approx(50.0)
    assert pc.hi.item() < 5.0  # the outlier is ignored
    errs = {}
    for name, o in (("minmax", mm), ("mse", mse)):
        s, z, qmin, qmax = o.qparams(4, symmetric=True)
        errs[name] = (QF.fake_quantize(x, s, z, qmin, qmax) - x).pow(2).mean().item()
    assert errs["mse"] < 0.5 * errs["minmax"]
    # per-channel MSE observer: one clipping ratio per channel
    w = torch.cat([_tensor(2, (1, 500)), _tensor(3, (1, 500)) * 10])
    o = Observer("mse", axis=0)
    o.update(w)
    s, _, _, _ = o.qparams(4, symmetric=True)
    assert s.shape == (2,) and s[1] > 5 * s[0]


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_fused_fake_quantize_matches_autograd_reference(axis: int | None) -> None:
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(4, 3, 5, generator=g) * 3).requires_grad_(True)
    n = 1 if axis is None else x.shape[axis]
    s = (torch.rand(n, generator=g) * 0.5 + 0.2).requires_grad_(True)
    z = torch.randint(2, 6, (n,), generator=g).float()
    up = torch.randn(4, 3, 5, generator=g)
    out = QF.fake_quantize(x, s, z, 0, 7, axis)
    gx, gs = torch.autograd.grad((out * up).sum(), (x, s))
    # reference: the textbook STE expression, differentiated by autograd
    sb, zb = QF.broadcast_param(s, x, axis), QF.broadcast_param(z, x, axis)
    ref = (torch.clamp(QF.round_ste(x / sb) + zb, 0, 7) - zb) * sb
    rx, rs = torch.autograd.grad((ref * up).sum(), (x, s))
    assert torch.equal(out, ref.detach()) or torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(gx, rx) and torch.allclose(gs, rs, atol=1e-5)
