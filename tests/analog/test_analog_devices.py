"""Device models against their formulas: statistics on ~1e5 devices with stated tolerances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cimkit.analog import (
    DEVICES,
    DeviceConfig,
    DriftModel,
    device_preset,
    devices_at,
    drift_exponents,
    drift_factor,
    ir_drop_factor,
    program_conductance,
    program_devices,
    programming_noise_std,
    quantize_levels,
    read_noise_std,
    relaxation_std,
    sample_stuck_at,
)
from cimkit.errors import ConfigError

N = 100_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_presets_listed_with_sources_and_round_trip() -> None:
    assert {"ideal", "pcm", "rram", "rram_saf"} <= set(DEVICES.list())
    for name in DEVICES.list():
        cfg = DEVICES.get(name)
        assert DEVICES.entry(name).description
        assert DeviceConfig.from_dict(cfg.to_dict()) == cfg
        assert DeviceConfig.from_toml(cfg.to_toml()) == cfg
    assert "Nandakumar" in DEVICES.entry("pcm").meta["source"]
    assert "Wan" in DEVICES.entry("rram").meta["source"]


@pytest.mark.parametrize(
    "bad",
    [{"g_max": 0.0}, {"g_min": 30.0}, {"n_levels": 1}, {"p_stuck_min": 0.7, "p_stuck_max": 0.5},
     {"relax_times": (10.0,)}, {"drift_model": "sideways"}, {"prog_coeffs": ()}],
)  # fmt: skip
def test_device_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        DeviceConfig.from_dict({**DEVICES.get("pcm").to_dict(), **bad})


@pytest.mark.parametrize("g_rel", [0.25, 0.5, 1.0])
def test_pcm_programming_noise_std_matches_polynomial(g_rel: float) -> None:
    dev = DEVICES.get("pcm")
    g = torch.full((N,), g_rel * dev.g_max)
    gp = program_conductance(g, dev, _gen(1))
    expected = 0.26348 + 1.9650 * g_rel - 1.1731 * g_rel**2  # µS, Nandakumar 2019 at g_max = 25 µS
    assert float(programming_noise_std(g[:1], dev)) == pytest.approx(expected, rel=1e-6)
    # sample std of N=1e5 normals has relative std 1/sqrt(2N) = 0.22 %; allow 1.5 % (~7 sigma)
    assert float((gp - g).std()) == pytest.approx(expected, rel=0.015)
    assert abs(float((gp - g).mean())) < 5 * expected / math.sqrt(N)


def test_programming_noise_scales_with_g_max_and_clamps_at_zero() -> None:
    dev = DEVICES.get("pcm").replace(g_max=50.0)
    g = torch.full((N,), 25.0)
    expected = (0.26348 + 1.9650 * 0.5 - 1.1731 * 0.25) * 50.0 / 25.0
    assert float(programming_noise_std(g[:1], dev)) == pytest.approx(expected, rel=1e-6)
    g0 = program_conductance(torch.zeros(N), DEVICES.get("pcm"), _gen(2))
    assert float(g0.min()) == 0.0
    assert 0.45 < float((g0 == 0).float().mean()) < 0.55  # half the draws clamp at 0


def test_pcm_drift_mean_factor_matches_lognormal_formula() -> None:
    dev = DEVICES.get("pcm")
    g = torch.full((N,), dev.g_max)  # mu = clip(0.0244, 0.049, .1) = 0.049, sigma = clip(-0.0059, .008, .045) = 0.008
    nu = drift_exponents(g, dev, _gen(3))
    mu, sig = 0.049, 0.008
    assert float(nu.mean()) == pytest.approx(mu, abs=4 * sig / math.sqrt(N))
    assert float(nu.std()) == pytest.approx(sig, rel=0.015)
    t = 86400.0
    lt = math.log((t + 20.0) / 20.0)
    f = drift_factor(t, nu, dev.t0)
    # E[exp(-nu L)] for nu ~ N(mu, sig) is exp(-mu L + sig^2 L^2 / 2) (folding at 0 is < 1e-9 here)
    expected = math.exp(-mu * lt + 0.5 * sig**2 * lt**2)
    assert float(f.mean()) == pytest.approx(expected, rel=2e-3)
    assert float(drift_factor(0.0, nu, dev.t0).min()) == 1.0


def test_pcm_drift_exponent_folded_normal_at_low_conductance() -> None:
    dev = DEVICES.get("pcm")
    g_rel = 0.1
    mu = -0.0155 * math.log(g_rel) + 0.0244
    sig = -0.0125 * math.log(g_rel) - 0.0059
    nu = drift_exponents(torch.full((N,), g_rel * dev.g_max), dev, _gen(4))
    phi = 0.5 * (1 + math.erf(-mu / sig / math.sqrt(2)))
    folded_mean = sig * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sig**2)) + mu * (1 - 2 * phi)
    assert float(nu.mean()) == pytest.approx(folded_mean, abs=4 * sig / math.sqrt(N))
    assert float(nu.min()) >= 0.0


def test_pcm_read_noise_std_hand_computed() -> None:
    dev = DEVICES.get("pcm")
    g = torch.tensor([12.5])
    t = 3600.0
    q_s = min(0.0088 / 0.5**0.65, 0.2)
    expected = 12.5 * q_s * math.sqrt(math.log((t + 20.0 + 250e-9) / (2 * 250e-9)))
    assert float(read_noise_std(g, g, t, dev)) == pytest.approx(expected, rel=1e-5)
    # Q_s saturates at 0.2 for tiny conductances
    tiny = torch.tensor([1e-4])
    sat = 1e-4 * 0.2 * math.sqrt(math.log((t + 20.0 + 250e-9) / (2 * 250e-9)))
    assert float(read_noise_std(tiny, tiny, t, dev)) == pytest.approx(sat, rel=1e-5)
    # white read noise adds in quadrature
    dev2 = dev.replace(read_noise_std=0.5)
    assert float(read_noise_std(g, g, t, dev2)) == pytest.approx(math.hypot(expected, 0.5), rel=1e-5)


def test_stuck_at_rates_match_and_devices_are_stuck() -> None:
    dev = device_preset("rram_saf")
    low, high = sample_stuck_at((N,), dev, _gen(5))
    assert not bool((low & high).any())
    for mask, p in ((low, 0.0175), (high, 0.0904)):
        tol = 4 * math.sqrt(p * (1 - p) / N)  # 4 binomial sigmas
        assert abs(float(mask.float().mean()) - p) < tol
    g = torch.full((N,), 20.0)
    state = program_devices(g, dev, _gen(6))
    assert state.stuck is not None
    frac = float(state.stuck.float().mean())
    assert abs(frac - (0.0175 + 0.0904)) < 4 * math.sqrt(0.11 * 0.89 / N)
    stuck_vals = state.g_prog[state.stuck]
    assert bool(((stuck_vals == dev.g_min) | (stuck_vals == dev.g_max)).all())
    g_t, _ = devices_at(state, dev, 86400.0 * 2)
    assert torch.equal(g_t[state.stuck], state.g_prog[state.stuck])  # stuck devices do not relax


def test_rram_total_deviation_matches_fit_at_one_day() -> None:
    dev = DEVICES.get("rram")
    g_rel = 0.5
    g = torch.full((N,), g_rel * dev.g_max)
    state = program_devices(g, dev, _gen(7))
    day = [0.701, 22.086, -50.773, 47.095, -16.458]
    expected = sum(c * g_rel**i for i, c in enumerate(day))  # µS (g_max = reference 40 µS)
    g_day, _ = devices_at(state, dev, 86400.0)
    assert float((g_day - g).std()) == pytest.approx(expected, rel=0.02)
    one_s = [0.348, 16.030, -43.853, 45.393, -16.815]
    assert float((state.g_prog - g).std()) == pytest.approx(sum(c * g_rel**i for i, c in enumerate(one_s)), rel=0.02)
    assert float(relaxation_std(g[:1], 0.5, dev)) == 0.0  # before prog_time: nothing added


def test_levels_and_d2d_variation() -> None:
    dev = DEVICES.get("ideal").replace(n_levels=5, g_max=20.0)
    g = torch.linspace(0, 20, 101)
    q = quantize_levels(g, dev)
    assert set(torch.unique(q).tolist()) <= {0.0, 5.0, 10.0, 15.0, 20.0}
    assert float((q - g).abs().max()) <= 2.5 + 1e-6
    dev2 = DEVICES.get("ideal").replace(d2d_std=0.1)
    state = program_devices(torch.full((N,), 10.0), dev2, _gen(8))
    assert float((state.g_prog / 10.0).std()) == pytest.approx(0.1, rel=0.02)


def test_same_generator_seed_same_devices() -> None:
    dev = DEVICES.get("pcm")
    g = torch.rand(1000) * 25
    a = program_devices(g, dev, _gen(9))
    b = program_devices(g, dev, _gen(9))
    c = program_devices(g, dev, _gen(10))
    assert torch.equal(a.g_prog, b.g_prog) and torch.equal(a.drift, b.drift)
    assert not torch.equal(a.g_prog, c.g_prog)


def _exact_crossbar(g: np.ndarray, r: float) -> np.ndarray:
    """Effective conductances (R x C) of a crossbar with wire resistance r, by nodal analysis.

    Row drivers at column 0's side (segment driver->col 0 included), column sense amplifiers
    (virtual ground) at row 0's side (segment row 0->amp included); g in S.
    """
    rows, cols = g.shape
    n = rows * cols
    wl = lambda i, c: i * cols + c  # noqa: E731
    bl = lambda i, c: n + i * cols + c  # noqa: E731
    gw = 1.0 / r
    m = np.zeros((2 * n, 2 * n))

    def link(a: int, b: int, cond: float) -> None:
        m[a, a] += cond
        m[b, b] += cond
        m[a, b] -= cond
        m[b, a] -= cond

    for i in range(rows):
        for c in range(cols):
            link(wl(i, c), bl(i, c), g[i, c])
            if c + 1 < cols:
                link(wl(i, c), wl(i, c + 1), gw)
            if i + 1 < rows:
                link(bl(i, c), bl(i + 1, c), gw)
        m[wl(i, 0), wl(i, 0)] += gw  # to the driver (a source: moves to the right-hand side)
    for c in range(cols):
        m[bl(0, c), bl(0, c)] += gw  # to virtual ground
    geff = np.zeros_like(g)
    for i in range(rows):
        rhs = np.zeros(2 * n)
        rhs[wl(i, 0)] = gw * 1.0  # unit input on row i
        v = np.linalg.solve(m, rhs)
        geff[i] = np.array([v[bl(0, c)] * gw for c in range(cols)])
    return geff


def test_ir_drop_first_order_model_against_nodal_solve() -> None:
    torch.manual_seed(0)
    g_us = torch.rand(12, 6) * 25.0  # µS
    r_wire = 30.0  # Ω: attenuations up to ~4 %
    exact = _exact_crossbar(g_us.double().numpy() * 1e-6, r_wire) * 1e6
    model = (g_us * ir_drop_factor(g_us, r_wire)).double().numpy()
    effect = np.abs(g_us.double().numpy() - exact)
    assert effect.max() / 25.0 > 0.01  # the IR drop is not negligible in this case
    # the first-order model captures > 90 % of the IR drop on every cell
    assert np.all(np.abs(model - exact) <= 0.1 * effect + 1e-9)
    assert torch.equal(ir_drop_factor(g_us, 0.0), torch.ones_like(g_us))


def test_drift_model_none_is_static_and_negative_time_rejected() -> None:
    dev = DEVICES.get("ideal")
    assert dev.drift_model == DriftModel.NONE and dev.is_ideal
    g = torch.rand(100) * 25
    state = program_devices(g, dev, _gen(11))
    g_t, sig = devices_at(state, dev, 1e7)
    assert torch.equal(g_t, g) and float(sig.abs().max()) == 0.0
    with pytest.raises(ConfigError):
        devices_at(state, dev, -1.0)


@pytest.mark.parametrize("level", [0.0, 0.02, 0.4, 1.0])  # target conductance / g_max
@pytest.mark.parametrize("preset", ["pcm", "rram"])
def test_fused_hwa_read_matches_program_drift_read(preset: str, level: float) -> None:
    from cimkit.analog.devices import sample_read

    dev = DEVICES.get(preset)
    g = torch.full((N,), level * dev.g_max)
    t = 86400.0
    fused = sample_read(g, dev, t, _gen(12), fast=False)
    state = program_devices(g, dev, _gen(13))
    g_mean, sigma = devices_at(state, dev, t)
    general = (g_mean + sigma * torch.randn(N, generator=_gen(14))).clamp(min=0.0)
    # two independent samples of the same distribution: means within 5 standard errors, stds within 3 %
    se = float(general.std()) / math.sqrt(N)
    assert abs(float(fused.mean()) - float(general.mean())) < 5 * math.sqrt(2) * se
    assert float(fused.std()) == pytest.approx(float(general.std()), rel=0.03)
