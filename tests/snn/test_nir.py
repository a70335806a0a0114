"""NIR export/import: exact round trips (every reset mode and timing, both discretizations, residual
graphs), per-neuron parameters, the β↔τ convention, metadata and errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir", reason="the nir package is not installed (pip install 'cimkit[snn]')")

from cimkit.errors import ConfigError, DataError  # noqa: E402
from cimkit.snn import IF, LIF, ConvertConfig, CubaLIF, SpikingNet, SumPool2d, to_snn  # noqa: E402
from cimkit.snn.nir import export_nir, import_nir, load_nir, read_nir, write_nir  # noqa: E402


def conv_net(mode: str, delay: bool, disc: str = "euler") -> nn.Module:
    g = torch.Generator().manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), IF(threshold=0.7, reset_mechanism=mode, init_mem_frac=0.5, reset_delay=delay),
        SumPool2d(2), nn.Flatten(), nn.Linear(64, 16),
        LIF(beta=torch.rand(16, generator=g) * 0.9 + 0.05, threshold=torch.rand(16, generator=g) + 0.5,
            reset_mechanism=mode, reset_delay=delay, discretization=disc),
        nn.Linear(16, 12, bias=False),
        CubaLIF(alpha=0.6, beta=torch.rand(12, generator=g), threshold=0.9, reset_mechanism=mode, reset_delay=delay,
                graded_spikes_factor=2.0, discretization=disc),
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
def test_round_trip_is_exact(tmp_path: Path, mode: str, delay: bool) -> None:
    torch.manual_seed(0)  # the layers' default init: seeded, so the activity check below never depends on test order
    net = conv_net(mode, delay)
    m = SpikingNet(net, 20, readout="sequence")
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        y = m(x)
    assert 20 < float(y.sum()) < y.numel()
    write_nir(tmp_path / "m.nir", m, x)
    back = load_nir(tmp_path / "m.nir")
    assert back.num_steps == 20 and back.readout.value == "sequence"
    with torch.no_grad():
        assert torch.equal(back(x), y)
    lifs = [n for n in back.modules() if isinstance(n, (LIF, CubaLIF))]
    assert all(n.reset_mechanism.value == mode and n.reset_delay == delay for n in lifs)


def test_parameters_are_per_neuron_and_tau_follows_the_discretization() -> None:
    for disc in ("euler", "exact"):
        net = conv_net("zero", True, disc)
        x = torch.zeros(1, 1, 8, 8)
        g = export_nir(SpikingNet(net, 4), x)
        assert isinstance(g.nodes["1"], nir.IF) and g.nodes["1"].v_threshold.shape == (4, 8, 8)
        assert float(g.nodes["1"].r.flat[0]) == pytest.approx(1e4)  # R = 1/dt: unit input gain
        lif = g.nodes["5"]
        assert isinstance(lif, nir.LIF) and lif.tau.shape == (16,) and lif.v_threshold.shape == (16,)
        b = net[5].beta.double().numpy()
        dt = 1e-4
        tau = dt / (1 - b) if disc == "euler" else -dt / torch.log(torch.from_numpy(b)).numpy()
        assert lif.tau == pytest.approx(tau, rel=1e-12)
        assert lif.r == pytest.approx(1 / (1 - b), rel=1e-12)
        cuba = g.nodes["7"]
        assert isinstance(cuba, nir.CubaLIF) and cuba.w_in.shape == (12,)
        assert isinstance(g.nodes["7_scale"], nir.Scale)  # the spike amplitude 2
        assert g.metadata["discretization"] == disc and g.metadata["dt"] == dt
        assert lif.metadata["reset_mechanism"] == "zero"


def test_residual_graph_round_trip() -> None:
    """A converted ResNet (functional ReLUs, adds as fan-in edges, global average pooling)."""
    from cimkit.models import create

    torch.manual_seed(0)
    ann = create("resnet20", in_channels=1, num_classes=5, input_size=(8, 8), width=4, blocks_per_stage=1).eval()
    x = torch.randn(8, 1, 8, 8)
    snn = to_snn(copy.deepcopy(ann), [x], ConvertConfig(num_steps=12))
    with torch.no_grad():
        y = snn(x)
    g = export_nir(snn, x)
    fan_in = [n for n in g.nodes if sum(1 for e in g.edges if e[1] == n) > 1]
    assert fan_in  # residual adds are nodes with two incoming edges
    back = import_nir(g)
    with torch.no_grad():
        assert torch.equal(back(x), y)


def test_import_without_metadata_uses_nir_semantics() -> None:
    """A hand-built graph: LIF with non-unit input gain -> threshold scaled, immediate reset to zero."""
    dt, n = 1e-3, 3
    tau = torch.tensor([2e-3, 5e-3, 1e-2], dtype=torch.float64).numpy()
    r = 2.0 * tau / dt  # input gain κ = R dt/τ = 2
    g = nir.NIRGraph.from_list(nir.Affine(weight=torch.eye(n).numpy(), bias=torch.zeros(n).numpy()),
                               nir.LIF(tau=tau, r=r, v_leak=torch.zeros(n).numpy(), v_threshold=torch.ones(n).numpy(),
                                       v_reset=torch.zeros(n).numpy()))  # fmt: skip
    m = import_nir(g, dt=dt, num_steps=25)
    lif = next(x for x in m.modules() if isinstance(x, LIF))
    assert lif.reset_mechanism.value == "zero" and not lif.reset_delay
    assert torch.allclose(lif.threshold, torch.full((n,), 0.5))
    assert torch.allclose(lif.beta.double(), torch.from_numpy(1 - dt / tau), atol=1e-7)
    # the same spikes as the gain-2 neuron simulated directly: V = βV + 2 I, reset to 0 when V > 1
    x = torch.full((1, n), 0.3)
    with torch.no_grad():
        s = m(x)[:, 0]
    v, ref = torch.zeros(n, dtype=torch.float64), []
    for _ in range(25):
        v = torch.from_numpy(1 - dt / tau) * v + 2 * 0.3
        spk = (v > 1.0).double()
        v = v * (1 - spk)
        ref.append(spk)
    assert torch.equal(s.double(), torch.stack(ref))


def test_errors(tmp_path: Path) -> None:
    n = 2
    z = torch.zeros(n).numpy()
    leak = nir.NIRGraph.from_list(nir.LIF(tau=z + 1e-3, r=z + 10.0, v_leak=z + 0.1, v_threshold=z + 1, v_reset=z))
    with pytest.raises(DataError, match="v_leak"):
        import_nir(leak)
    cyc = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": torch.tensor([n]).numpy()}),
                              "a": nir.Linear(weight=torch.eye(n).numpy()), "b": nir.Linear(weight=torch.eye(n).numpy()),
                              "output": nir.Output(output_type={"output": torch.tensor([n]).numpy()})},
                       edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")], type_check=False)  # fmt: skip
    with pytest.raises(DataError, match="cycles"):
        import_nir(cyc)
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot be read"):
        read_nir(bad)
    with pytest.raises(ConfigError, match="AvgPool1d"):
        export_nir(SpikingNet(nn.Sequential(nn.Linear(4, 4), nn.AvgPool1d(1), IF()), 2), torch.zeros(1, 1, 4))
    with pytest.raises(ConfigError, match="MaxPool2d"):
        export_nir(SpikingNet(nn.Sequential(nn.MaxPool2d(2), IF()), 2), torch.zeros(1, 1, 4, 4))
