"""Input encoders: direct repetition, seeded Bernoulli rates (statistics), latency spike times."""

from __future__ import annotations

import math

import pytest
import torch

from cimkit.errors import ConfigError
from cimkit.snn import DirectEncoder, LatencyEncoder, RateEncoder, make_encoder


def test_direct_repeats_the_input() -> None:
    x = torch.randn(3, 1, 4, 4)
    s = DirectEncoder()(x, 5)
    assert s.shape == (5, 3, 1, 4, 4) and all(torch.equal(s[t], x) for t in range(5))


def test_rate_statistics_seed_and_rescale() -> None:
    p = torch.linspace(0.0, 1.0, 11).repeat(200)  # (2200,)
    enc = RateEncoder(seed=3)
    t = 400
    s = enc(p, t)  # (T, N)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    rate = s.mean(0).view(200, 11).mean(0)  # 80,000 Bernoulli draws per probability
    sd = torch.sqrt(p[:11] * (1 - p[:11]) / (t * 200))
    assert bool((rate - p[:11]).abs().le(5 * sd + 1e-12).all())  # 5 sigma
    assert rate[0] == 0.0 and rate[-1] == 1.0
    enc.reseed(3)
    assert torch.equal(enc(p, t), s)  # reproducible from the seed
    assert not torch.equal(RateEncoder(seed=4)(p, t), s)
    # per-channel gain/offset and the unbiased rescaling for normalised images
    x = torch.full((500, 2, 1, 1), 0.5)
    r = RateEncoder(gain=(0.5, 1.0), offset=(0.25, 0.0), rescale=True, seed=0)(x, 200)  # p = 0.5 for both
    assert set(r[:, :, 0].unique().tolist()) == {-0.5, 1.5}  # (S - 0.25) / 0.5
    assert abs(float(r.mean()) - 0.5) < 5 * 0.5 / math.sqrt(200 * 500 * 2)  # E = x


def test_latency_one_spike_at_the_formula_step() -> None:
    x = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.02, 0.005])
    t = 9
    s = LatencyEncoder(threshold=0.01)(x, t)
    assert s.sum(0).tolist() == [1, 1, 1, 1, 1, 0]  # one spike each; below threshold: none
    times = s.argmax(0)[:5].tolist()
    assert times == [round((1 - v) * (t - 1)) for v in x[:5].tolist()]
    lg = LatencyEncoder(threshold=0.01, code="log")
    tl = lg.spike_times(x, t)[:5]
    expect = torch.round((t - 1) * torch.log(1 / x[:5]) / math.log(1 / 0.01))
    assert torch.equal(tl, expect)


def test_encoder_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean"):
        make_encoder("rat")
    with pytest.raises(ConfigError, match="gain"):
        RateEncoder(gain=0.0)
    with pytest.raises(ConfigError, match="per-channel"):
        RateEncoder(gain=(1.0, 1.0, 1.0))(torch.zeros(2, 2, 3, 3), 2)
