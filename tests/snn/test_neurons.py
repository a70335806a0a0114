"""LIF / IF / CubaLIF dynamics against closed-form solutions, every reset mode, the hand-written
backward pass against autograd through a step-by-step reference, parameters and errors."""

from __future__ import annotations

import math

import pytest
import torch

from cimkit.errors import ConfigError
from cimkit.snn import IF, LIF, CubaLIF, beta_from_tau, tau_from_beta


def run(neuron: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Drive ``neuron`` with ``x`` (T, B, F); spikes (T, B, F)."""
    t = x.shape[0]
    neuron.num_steps = t
    return neuron(x.reshape(t * x.shape[1], *x.shape[2:])).reshape(x.shape)


def const(t: int, value: float, n: int = 1) -> torch.Tensor:
    return torch.full((t, 1, n), value, dtype=torch.float64)


def test_lif_membrane_closed_form_without_spikes() -> None:
    # U_t = I (1 - β^{t+1}) / (1 - β) for a constant current and no spike (threshold out of reach)
    beta, cur, t = 0.8, 0.3, 40
    n = LIF(beta=beta, threshold=1e6, record=True).double()
    run(n, const(t, cur))
    beta = float(n.beta)  # the stored (float32-rounded) decay
    k = torch.arange(t, dtype=torch.float64)
    expect = cur * (1 - beta ** (k + 1)) / (1 - beta)
    assert torch.allclose(n.mem_rec[:, 0, 0], expect, rtol=1e-12, atol=1e-12)


def test_cuba_membrane_closed_form_without_spikes() -> None:
    # I_t = X (1 - α^{t+1})/(1 - α);  U_t = X/(1-α) [ (1-β^{t+1})/(1-β) - α (β^{t+1} - α^{t+1})/(β - α) ]
    a, b, x0, t = 0.6, 0.9, 0.2, 50
    n = CubaLIF(alpha=a, beta=b, threshold=1e6, record=True).double()
    run(n, const(t, x0))
    a, b = float(n.alpha), float(n.beta)
    k = torch.arange(t, dtype=torch.float64) + 1
    syn = x0 * (1 - a**k) / (1 - a)
    mem = x0 / (1 - a) * ((1 - b**k) / (1 - b) - a * (b**k - a**k) / (b - a))
    assert torch.allclose(n.syn_rec[:, 0, 0], syn, rtol=1e-12)
    assert torch.allclose(n.mem_rec[:, 0, 0], mem, rtol=1e-12)


CUR = 1.0 / math.pi  # T·I/θ is never an integer: no ties at the threshold


@pytest.mark.parametrize("t", [1, 5, 16, 64])
def test_if_subtract_spike_count_closed_form(t: int) -> None:
    # reset by subtraction keeps the residual: N_T = floor(T·I/θ); from U = θ/2: floor(T·I/θ + 1/2)
    assert int(run(IF(threshold=1.0).double(), const(t, CUR)).sum()) == math.floor(t * CUR)
    half = IF(threshold=1.0, init_mem_frac=0.5).double()
    assert int(run(half, const(t, CUR)).sum()) == math.floor(t * CUR + 0.5)


def test_if_zero_reset_fires_every_k_steps() -> None:
    # reset to zero forgets the residual: with k = min{n : n·I > θ} the neuron fires at k-1, 2k-1, ...
    t, cur = 60, 0.3
    k = 4  # 4 · 0.3 = 1.2 > 1 > 3 · 0.3
    s = run(IF(threshold=1.0, reset_mechanism="zero").double(), const(t, cur))[:, 0, 0]
    assert torch.nonzero(s).flatten().tolist() == list(range(k - 1, t, k))


def test_lif_zero_reset_period_closed_form() -> None:
    beta, cur, t = 0.9, 0.25, 80
    beta = float(torch.tensor(beta))  # float32-rounded, as stored
    # first n with I (1 - β^n) / (1 - β) > θ
    k = next(n for n in range(1, 100) if cur * (1 - beta**n) / (1 - beta) > 1.0)
    s = run(LIF(beta=beta, threshold=1.0, reset_mechanism="zero").double(), const(t, cur))[:, 0, 0]
    assert torch.nonzero(s).flatten().tolist() == list(range(k - 1, t, k))


def test_no_reset_integrates_and_fires_every_step_above_threshold() -> None:
    t, cur = 20, 0.3
    s = run(IF(threshold=1.0, reset_mechanism="none").double(), const(t, cur))[:, 0, 0]
    expect = [(i + 1) * cur > 1.0 for i in range(t)]
    assert s.bool().tolist() == expect


def test_lif_subtract_resets_after_the_leak() -> None:
    # snnTorch's delayed reset: U_t = β U_{t-1} + I - θ S_{t-1}
    beta, t = 0.5, 12
    x = torch.zeros(t, 1, 1, dtype=torch.float64)
    x[0] = 1.5
    n = LIF(beta=beta, threshold=1.0, record=True).double()
    s = run(n, x)
    assert s[0, 0, 0] == 1 and s[1:].sum() == 0
    assert float(n.mem_rec[1, 0, 0]) == pytest.approx(beta * 1.5 - 1.0)
    m = LIF(beta=beta, threshold=1.0, reset_delay=False, record=True).double()
    run(m, x)  # immediate reset: V_0 = 1.5 - 1, V_1 = β · 0.5
    assert float(m.mem_rec[0, 0, 0]) == pytest.approx(0.5) and float(m.mem_rec[1, 0, 0]) == pytest.approx(beta * 0.5)


@pytest.mark.parametrize("mode", ["subtract", "zero", "none"])
def test_reset_delay_is_equivalent_where_it_must_be(mode: str) -> None:
    # IF neurons and LIF with reset to zero give the same spikes with either timing (for IF with
    # subtraction: while no step's input exceeds the threshold, as here)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(30, 4, 6, generator=g, dtype=torch.float64) * 2 - 1) * 0.8
    a = run(IF(threshold=0.8, reset_mechanism=mode).double(), x)
    b = run(IF(threshold=0.8, reset_mechanism=mode, reset_delay=False).double(), x)
    assert torch.equal(a, b)
    if mode == "zero":
        c = run(LIF(beta=0.7, threshold=0.8, reset_mechanism=mode).double(), x)
        d = run(LIF(beta=0.7, threshold=0.8, reset_mechanism=mode, reset_delay=False).double(), x)
        assert torch.equal(c, d)


def test_per_neuron_parameters_match_scalar_neurons() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(25, 3, 4, generator=g) * 1.5
    betas, ths = torch.tensor([0.2, 0.5, 0.8, 0.95]), torch.tensor([0.5, 1.0, 1.5, 0.7])
    s = run(LIF(beta=betas, threshold=ths), x)
    for i in range(4):
        si = run(LIF(beta=float(betas[i]), threshold=float(ths[i])), x[:, :, i : i + 1])
        assert torch.equal(s[:, :, i : i + 1], si)


def test_state_does_not_leak_between_forwards() -> None:
    x = torch.randn(10 * 2, 5, generator=torch.Generator().manual_seed(2))
    n = LIF(beta=0.9)
    n.num_steps = 10
    assert torch.equal(n(x), n(x))


def test_step_api_matches_the_sequence() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(15, 2, 5, generator=g)
    for delay in (True, False):
        n = CubaLIF(alpha=0.5, beta=0.8, threshold=0.7, reset_delay=delay)
        seq = run(n, x)
        syn = mem = None
        outs = []
        for t in range(15):
            s, syn, mem = n.step(x[t], syn, mem)
            outs.append(s)
        assert torch.equal(torch.stack(outs), seq)


def test_tau_and_dt_discretizations() -> None:
    dt, tau = 1e-3, 5e-3
    assert float(beta_from_tau(tau, dt, "euler")) == pytest.approx(1 - dt / tau)
    assert float(beta_from_tau(tau, dt, "exact")) == pytest.approx(math.exp(-dt / tau))
    for d in ("euler", "exact"):
        b = beta_from_tau(tau, dt, d)
        assert float(tau_from_beta(b, dt, d)) == pytest.approx(tau, rel=1e-12)
        n = LIF(tau=tau, dt=dt, discretization=d)
        assert float(n.beta) == pytest.approx(float(b), rel=1e-6)
        assert float(n.tau()) == pytest.approx(tau, rel=1e-6)
    c = CubaLIF(tau_syn=2e-3, tau_mem=5e-3, dt=dt, discretization="exact")
    assert float(c.alpha) == pytest.approx(math.exp(-0.5), rel=1e-6)


def test_user_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="reset_mechanism"):
        LIF(beta=0.5, reset_mechanism="soft")
    with pytest.raises(ConfigError, match="beta"):
        LIF()
    with pytest.raises(ConfigError, match="not both"):
        LIF(beta=0.5, tau=1e-3)
    with pytest.raises(ConfigError, match="threshold"):
        IF(threshold=-1.0)
    n = LIF(beta=0.5)
    n.num_steps = 3
    with pytest.raises(ConfigError, match="num_steps"):
        n(torch.zeros(4, 2))


def _reference(neuron: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd through neuron.step, one step at a time (the snnTorch way)."""
    syn = mem = None
    outs, mems = [], []
    for t in range(x.shape[0]):
        if isinstance(neuron, CubaLIF):
            s, syn, mem = neuron.step(x[t], syn, mem)
        else:
            s, mem = neuron.step(x[t], mem)
        outs.append(s)
        mems.append(mem)
    return torch.stack(outs), torch.stack(mems)


@pytest.mark.parametrize("cls", [LIF, CubaLIF])
@pytest.mark.parametrize("mode", ["subtract", "zero", "none"])
@pytest.mark.parametrize("frac", [0.0, 0.5])
def test_bptt_gradients_match_autograd_reference(cls: type, mode: str, frac: float) -> None:
    g = torch.Generator().manual_seed(4)
    t, b, f = 12, 3, 5
    x = (torch.randn(t, b, f, generator=g, dtype=torch.float64)).requires_grad_()
    kw = {"beta": torch.rand(f, generator=g) * 0.9 + 0.05, "threshold": torch.rand(f, generator=g) + 0.5,
          "reset_mechanism": mode, "learn_beta": True, "learn_threshold": True, "init_mem_frac": frac, "record": True}
    if cls is CubaLIF:
        kw.update(alpha=torch.rand(f, generator=g) * 0.9, learn_alpha=True)
    n = cls(**kw).double()
    w1, w2 = torch.randn(t, b, f, generator=g, dtype=torch.float64), torch.randn(t, b, f, generator=g, dtype=torch.float64)
    params = [x, *n.parameters()]
    out = run(n, x)
    assert int(out.sum()) > 0  # spikes happen, so the reset and surrogate paths are exercised
    g_fast = torch.autograd.grad((out * w1).sum() + (n.mem_rec * w2).sum(), params)
    s, m = _reference(n, x)
    assert torch.equal(s, out)
    g_ref = torch.autograd.grad((s * w1).sum() + (m * w2).sum(), params)
    for a, r in zip(g_fast, g_ref):
        assert torch.allclose(a, r, rtol=1e-10, atol=1e-12)
