"""Compressors as pure functions: TernGrad and QSGD unbiasedness (statistical, stated tolerances),
TernGrad's P(nonzero) = |g|/s and clipping, top-k error-feedback conservation."""

from __future__ import annotations

import math

import pytest
import torch
from stats_check import z_checks

from cimkit.dist import (
    TernScaler,
    chunk_ids,
    qsgd,
    qsgd_bits,
    qsgd_dequantize,
    ternarize,
    terngrad,
    terngrad_decode,
    terngrad_scalers,
    topk_count,
    topk_decode,
    topk_ef,
)
from cimkit.errors import ConfigError

SEEDS = 400  # generator seeds per statistical test


def _grad(n: int = 2000, seed: int = 0) -> torch.Tensor:
    g = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return g * torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)).square()  # varied magnitudes


def test_scalers_match_definitions() -> None:
    g = _grad(300)
    sizes = [100, 200]
    seg = torch.repeat_interleave(torch.arange(2), torch.tensor(sizes))
    s = terngrad_scalers(g, seg, 2, TernScaler.STDDEV, 2.5)
    ref = torch.stack([2.5 * g[:100].std(unbiased=False), 2.5 * g[100:].std(unbiased=False)])
    assert torch.allclose(s, ref, rtol=1e-5)
    s_max = terngrad_scalers(g, seg, 2, "max")
    assert torch.equal(s_max, torch.stack([g[:100].abs().max(), g[100:].abs().max()]))


def test_terngrad_max_scaler_is_unbiased_and_p_nonzero_is_g_over_s() -> None:
    g = _grad()
    draws = []
    for seed in range(SEEDS):
        t, s = terngrad(g, torch.Generator().manual_seed(seed), scaler="max")
        assert set(t.unique().tolist()) <= {-1, 0, 1}
        draws.append(t)
    t = torch.stack(draws).float()  # (M, n)
    s = float(g.abs().max())
    decoded = terngrad_decode(t, s)
    # E[g̃] = g, Var[g̃] = s|g| − g² (a ±s Bernoulli with P = |g|/s)
    p = g.abs() / s
    z_checks(decoded.mean(0), g, s * g.abs() - g.square(), SEEDS, p * (1 - p))
    z_checks((t != 0).float().mean(0), p, p * (1 - p), SEEDS, p * (1 - p))
    assert torch.all(torch.sign(t) * torch.sign(g) >= 0)  # a nonzero value always has g's sign


def test_terngrad_stddev_scaler_clips_at_c_sigma() -> None:
    g = _grad()
    s = float(terngrad(g)[1])
    assert s == pytest.approx(2.5 * float(g.std(unbiased=False)), rel=1e-5)
    assert (g.abs() > s).sum() > 10  # the test exercises the clipped regime
    t = torch.stack([terngrad(g, torch.Generator().manual_seed(k))[0] for k in range(SEEDS)]).float()
    clip = g.clamp(-s, s)
    # E[g̃] = clip(g, -s, s); entries beyond s are ±s with probability 1 (variance 0: exact)
    z_checks((t * s).mean(0), clip, s * clip.abs() - clip.square(), SEEDS, (clip.abs() / s) * (1 - clip.abs() / s))


def test_ternarize_uses_the_given_generator() -> None:
    g = _grad(100)
    a = ternarize(g, 1.0, torch.Generator().manual_seed(7))
    b = ternarize(g, 1.0, torch.Generator().manual_seed(7))
    c = ternarize(g, 1.0, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(("levels", "bucket"), [(1, 0), (3, 256), (7, 512)])
def test_qsgd_is_unbiased_with_the_stated_variance(levels: int, bucket: int) -> None:
    v = _grad(1000, seed=3)
    qs, norms = [], None
    for seed in range(SEEDS):
        q, norms = qsgd(v, levels, torch.Generator().manual_seed(seed), bucket_size=bucket)
        assert int(q.abs().max()) <= levels
        qs.append(q)
    chunks, k = chunk_ids([v.numel()], bucket)
    assert norms is not None and norms.numel() == k
    dec = qsgd_dequantize(torch.stack(qs), norms, levels, chunks)  # (M, n)
    # ξ ∈ {l, l+1}: Var[Q_i] = (‖v‖/s)²·p(1−p) with r = s|v_i|/‖v‖, p = r − ⌊r⌋
    nrm = norms[chunks]
    r = levels * v.abs() / nrm
    p = r - r.floor()
    z_checks(dec.mean(0), v, (nrm / levels).square() * p * (1 - p), SEEDS, p * (1 - p))
    # Alistarh et al. Lemma 3.1: E‖Q(v) − v‖² ≤ min(n/s², √n/s)·‖v‖² per chunk of n entries
    n_chunk = v.numel() if bucket == 0 else bucket
    bound = min(n_chunk / levels**2, math.sqrt(n_chunk) / levels) * float(v.square().sum())
    assert float((dec - v).square().sum(1).mean()) <= bound


def test_qsgd_bits_and_errors() -> None:
    assert [qsgd_bits(s) for s in (1, 2, 7, 8, 127)] == [2, 4, 4, 8, 8]
    with pytest.raises(ConfigError, match="levels: 128"):
        qsgd_bits(128)


def test_chunks_do_not_straddle_tensors() -> None:
    ids, k = chunk_ids([5, 3], 2)
    assert ids.tolist() == [0, 0, 1, 1, 2, 3, 3, 4] and k == 5


def test_topk_error_feedback_conserves_the_gradient_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    n, k, steps = 500, topk_count(500, 0.02), 30
    assert k == 10
    residual, sent_sum, g_sum = None, torch.zeros(n), torch.zeros(n)
    for _ in range(steps):
        g = torch.randn(n, generator=gen)
        acc = g + (residual if residual is not None else 0)
        idx, vals, residual = topk_ef(g, residual, k)
        # the picks are the k largest |g + e|, their values are taken from g + e
        assert set(idx.tolist()) == set(acc.abs().topk(k).indices.tolist())
        assert torch.equal(vals, acc[idx])
        sent_sum += topk_decode(idx, vals, n)
        g_sum += g
    assert torch.allclose(sent_sum + residual, g_sum, atol=1e-5)
    assert int((residual != 0).sum()) <= n - k  # the last picks were zeroed in the residual


def test_topk_count() -> None:
    assert topk_count(0, 0.1) == 0 and topk_count(3, 0.01) == 1 and topk_count(1000, 0.015) == 15
    assert topk_count(10, 1.0) == 10
