"""Activity counts (spikes, synaptic operations, reads) against brute-force counting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.snn import IF, SpikingNet, measure_activity


class Spikes(nn.Module):
    """Replays a fixed (T·B, ...) binary tensor whatever the input (to count exactly)."""

    def __init__(self, s: torch.Tensor) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s


def test_linear_and_conv_synops_and_reads_by_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    t, b = 4, 3
    s = (torch.rand(t * b, 2, 6, 6, generator=g) > 0.7).float()
    conv = nn.Conv2d(2, 5, 3, stride=2, padding=1)
    net = nn.Sequential(Spikes(s), conv, IF(threshold=0.5), nn.Flatten(), nn.Linear(5 * 3 * 3, 7))
    snn = SpikingNet(net, t, readout="sum", hoist=False)
    st = measure_activity(snn, [torch.zeros(b, 1)])
    c = next(x for x in st.synapses if x.kind == "conv2d")
    # brute force: for every output position, count nonzero inputs in its receptive field
    pad = nn.functional.pad(s, (1, 1, 1, 1))
    total, nz_reads = 0.0, 0
    for i in range(3):
        for j in range(3):
            rf = pad[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            n = rf.flatten(1).sum(1)  # (T·B,)
            total += float(n.sum()) * 5
            nz_reads += int((n > 0).sum())
    assert c.synops == pytest.approx(total / b)
    assert c.nonzero_reads == pytest.approx(nz_reads / b)
    assert c.reads == pytest.approx(t * 9) and c.reads_per_step == pytest.approx(9)
    assert c.input_events == pytest.approx(float(s.sum()) / b) and c.binary_input and c.input_level == 1.0
    assert c.macs_per_step == pytest.approx(9 * 5 * 2 * 9)
    # the IF layer's spikes feed the Linear: its synops are events x out_features
    with torch.no_grad():
        spk = net[2](conv(s))
    n = st.neurons[0]
    assert n.spikes == pytest.approx(float(spk.sum()) / b) and n.neurons == 5 * 9 and n.updates == 5 * 9 * t
    lin = next(x for x in st.synapses if x.kind == "linear")
    assert lin.synops == pytest.approx(float(spk.sum()) * 7 / b)
    assert lin.reads == pytest.approx(t)
    assert st.synops == pytest.approx(c.synops + lin.synops) and st.macs == 0.0


def test_graded_inputs_are_not_binary_and_errors() -> None:
    net = nn.Sequential(nn.Linear(3, 2))
    st = measure_activity(SpikingNet(net, 2), [torch.tensor([[0.5, 1.0, 0.0]])])
    assert not st.synapses[0].binary_input and st.macs == pytest.approx(2 * 2 * 2)
    with pytest.raises(ConfigError, match="SpikingNet"):
        measure_activity(net, [torch.zeros(1, 3)])  # type: ignore[arg-type]
