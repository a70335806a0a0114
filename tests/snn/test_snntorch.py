"""Equality with snnTorch (an optional peer, installed for tests only with ``pip install --no-deps
snntorch nirtorch``): same parameters, same input -> the same spikes, membranes and gradients;
NIR files exchanged both ways give the same spikes for the semantics NIR can carry."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install --no-deps snntorch)")

from snntorch import surrogate as ssur  # noqa: E402
from snntorch import utils as sutils  # noqa: E402

from cimkit.snn import LIF, CubaLIF, SpikingClassification, SpikingNet, fast_sigmoid, make_surrogate  # noqa: E402

T, B, F = 30, 4, 8


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(T, B, F, generator=torch.Generator().manual_seed(seed)) * 1.5


def _run(n: nn.Module, x: torch.Tensor) -> torch.Tensor:
    n.num_steps = x.shape[0]
    return n(x.reshape(-1, *x.shape[2:])).reshape(x.shape)


@pytest.mark.parametrize("mode", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
def test_leaky_and_synaptic_spikes_and_membranes(mode: str, delay: bool) -> None:
    g = torch.Generator().manual_seed(1)
    beta, alpha, th = torch.rand(F, generator=g) * 0.9, torch.rand(F, generator=g) * 0.9, torch.rand(F, generator=g) + 0.5
    x = _x()
    ref = snn.Leaky(beta=beta, threshold=th, reset_mechanism=mode, reset_delay=delay)
    mine = LIF(beta=beta, threshold=th, reset_mechanism=mode, reset_delay=delay, record=True)
    mem, spk, mems = torch.zeros(B, F), [], []
    for t in range(T):
        s, mem = ref(x[t], mem)
        spk.append(s)
        mems.append(mem)
    assert torch.equal(_run(mine, x), torch.stack(spk))
    assert torch.allclose(mine.mem_rec, torch.stack(mems), atol=1e-6)
    ref2 = snn.Synaptic(alpha=alpha, beta=beta, threshold=th, reset_mechanism=mode, reset_delay=delay)
    mine2 = CubaLIF(alpha=alpha, beta=beta, threshold=th, reset_mechanism=mode, reset_delay=delay)
    syn, mem, spk = torch.zeros(B, F), torch.zeros(B, F), []
    for t in range(T):
        s, syn, mem = ref2(x[t], syn, mem)
        spk.append(s)
    assert torch.equal(_run(mine2, x), torch.stack(spk))


def test_surrogate_gradients_match_snntorch() -> None:
    x = torch.linspace(-1, 1, 201).requires_grad_()
    for theirs, ours in ((ssur.atan(alpha=2.0), "atan"), (ssur.fast_sigmoid(slope=25), "fast_sigmoid")):
        (g1,) = torch.autograd.grad(theirs(x).sum(), x)
        (g2,) = torch.autograd.grad(make_surrogate(ours)(x).sum(), x)
        assert torch.allclose(g1, g2, rtol=1e-6)


def test_training_gradients_match_snntorch_bptt() -> None:
    """One BPTT step of a 2-layer network (snnTorch tutorial style, ce_rate_loss): equal gradients."""
    import snntorch.functional as SF

    torch.manual_seed(0)
    l1, l2 = nn.Linear(F, 16), nn.Linear(16, 5)
    sg = ssur.fast_sigmoid(slope=25)
    ref = nn.Sequential(l1, snn.Leaky(beta=0.8, spike_grad=sg, init_hidden=True), l2,
                        snn.Leaky(beta=0.8, spike_grad=sg, init_hidden=True, output=True))  # fmt: skip
    mine = SpikingNet(nn.Sequential(copy.deepcopy(l1), LIF(0.8, spike_grad=fast_sigmoid(25)), copy.deepcopy(l2),
                                    LIF(0.8, spike_grad=fast_sigmoid(25))), T, readout="sequence")  # fmt: skip
    x = torch.rand(B, F) * 2
    y = torch.tensor([0, 1, 2, 3])
    sutils.reset(ref)
    spk = torch.stack([ref(x)[0] for _ in range(T)])
    loss_ref = SF.ce_rate_loss()(spk, y)
    loss_ref.backward()
    out = mine(x)
    assert torch.equal(out, spk)
    loss = SpikingClassification(T, loss="rate").loss(out, y)
    assert float(loss.detach()) == pytest.approx(float(loss_ref.detach()), rel=1e-6)
    loss.backward()
    for a, b in zip([l1.weight, l1.bias, l2.weight, l2.bias], [mine.net[0].weight, mine.net[0].bias,
                                                              mine.net[2].weight, mine.net[2].bias]):  # fmt: skip
        assert a.grad is not None and float(a.grad.abs().sum()) > 0
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- NIR interop

pytest.importorskip("nirtorch", reason="nirtorch is not installed (snnTorch's NIR import/export needs it)")
from snntorch.export_nir import export_to_nir  # noqa: E402
from snntorch.import_nir import import_from_nir  # noqa: E402

from cimkit.snn.nir import export_nir, import_nir, read_nir, write_nir  # noqa: E402


def _snntorch_run(net: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    sutils.reset(net)
    outs, state = [], None
    with torch.no_grad():
        for _ in range(steps):
            out = net(x) if state is None else net(x, state)
            if isinstance(out, tuple):
                out, state = out
            outs.append(out)
    return torch.stack(outs)


def test_snntorch_imports_cimkit_export(tmp_path: object) -> None:
    """Semantics NIR carries (immediate reset to zero; for IF/LIF also the delayed one): snnTorch's
    importer reproduces cimkit's spikes. (snnTorch 1.0.0 reads NIR IF as a leaky neuron with β = 0.9,
    so IF layers are not compared.)"""
    g = torch.Generator().manual_seed(2)
    lif = LIF(beta=torch.rand(16, generator=g) * 0.8 + 0.1, threshold=0.8, reset_mechanism="zero")
    cuba = CubaLIF(alpha=0.5, beta=0.7, threshold=1.0, reset_mechanism="zero", reset_delay=False)
    out = LIF(beta=0.9, threshold=1.0, reset_mechanism="zero", reset_delay=False)
    net = nn.Sequential(nn.Linear(10, 16), lif, nn.Linear(16, 8), cuba, nn.Linear(8, 4), out)
    with torch.no_grad():
        for lin in (net[0], net[2], net[4]):
            lin.weight.mul_(3.0)
    m = SpikingNet(net, T, readout="sequence")
    x = torch.randn(5, 10, generator=g) * 2
    with torch.no_grad():
        y = m(x)
    assert y.sum() > 10
    path = tmp_path / "net.nir"  # type: ignore[operator]
    write_nir(path, m, x)
    theirs = _snntorch_run(import_from_nir(read_nir(path)), x, T)
    assert torch.equal(theirs, y)


@pytest.mark.parametrize("mode", ["zero", "subtract"])
def test_cimkit_imports_snntorch_export(mode: str) -> None:
    """cimkit reads snnTorch's file as snnTorch's own importer does; with reset to zero that is also
    the original network's spikes (NIR has no reset by subtraction, so the original differs then)."""
    g = torch.Generator().manual_seed(3)
    s_net = nn.Sequential(nn.Linear(10, 16), snn.Leaky(beta=torch.rand(16, generator=g) * 0.8 + 0.1,
                                                       threshold=torch.ones(16), init_hidden=True, reset_mechanism=mode),
                          nn.Linear(16, 4), snn.Leaky(beta=0.9 * torch.ones(4), threshold=torch.ones(4),
                                                      init_hidden=True, reset_mechanism=mode))  # fmt: skip
    graph = export_to_nir(s_net, torch.randn(1, 10), ignore_dims=[0])
    x = torch.randn(6, 10, generator=g) * 2
    ours = import_nir(graph, num_steps=T)
    with torch.no_grad():
        y = ours(x)
    assert torch.equal(y, _snntorch_run(import_from_nir(graph), x, T))
    original = _snntorch_run(s_net, x, T)
    if mode == "zero":
        assert torch.equal(y, original)
    else:
        assert not torch.equal(y, original)
        # cimkit's own files keep the reset: export cimkit's import with subtraction restored, round trip exact
        for n in ours.net.modules():
            if isinstance(n, LIF):
                n.reset_mechanism = n.reset_mechanism.__class__("subtract")
                n.reset_delay = True
        with torch.no_grad():
            y_sub = ours(x)
        assert torch.equal(y_sub, original)
        back = import_nir(export_nir(ours, x))
        with torch.no_grad():
            assert torch.equal(back(x), original)
