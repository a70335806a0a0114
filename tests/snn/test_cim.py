"""Spiking networks on crossbars: a spiking layer on an ideal crossbar equals the digital spiking
layer; spike-driven layers take 1-bit pulses (no DAC); device noise and hardware-aware training."""

from __future__ import annotations

import copy

import torch
from torch import nn

import cimkit.experiment  # noqa: F401  (plugins)
from cimkit import analog
from cimkit.analog.config import AnalogConfig, HWAConfig
from cimkit.snn import LIF, ConvertConfig, SpikingNet, spike_input_levels, to_crossbars, to_snn


def _net() -> SpikingNet:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), LIF(beta=0.9, threshold=0.5), nn.Linear(32, 16), LIF(beta=0.8),
                        nn.Linear(16, 6), LIF(beta=0.95, threshold=0.7))  # fmt: skip
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.6)
    return SpikingNet(net.double(), 25, readout="sequence")


def test_spiking_layers_on_an_ideal_crossbar_equal_the_digital_ones() -> None:
    snn = _net()
    x = torch.randn(16, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    with torch.no_grad():
        ref = snn(x)
    assert 50 < float(ref.sum()) < ref.numel() - 50
    cim, levels = to_crossbars(copy.deepcopy(snn), AnalogConfig(mapping="ideal", device="ideal"), [x])
    assert set(levels) == {"net.2", "net.4"} and all(v == 1.0 for v in levels.values())
    layers = dict(analog.analog_layers(cim))
    assert len(layers) == 3
    for name in levels:
        m = layers[name].mapping
        assert (m.dac_bits, m.dac_range_mode.value, m.dac_range) == (0, "fixed", 1.0)
    with torch.no_grad():
        assert torch.equal(cim(x), ref)  # every spike identical, every step
    # the same after programming an ideal chip (no noise, no drift)
    analog.program(cim, 0)
    analog.drift(cim, 86400.0)
    with torch.no_grad():
        assert torch.equal(cim(x), ref)


def test_first_layer_keeps_its_dac_and_devices_perturb(digits_mlp) -> None:  # type: ignore[no-untyped-def]
    ann, _acc, calib, _test = digits_mlp
    snn = to_snn(copy.deepcopy(ann), calib, ConvertConfig(num_steps=8))
    cim, _levels = to_crossbars(copy.deepcopy(snn), AnalogConfig(mapping="calibrated", device="pcm"), calib)
    layers = list(analog.analog_layers(cim))
    assert [m.mapping.dac_bits for _, m in layers] == [8, 0, 0]  # analog input layer, then two spike layers
    analog.calibrate(cim, calib)
    analog.program(cim, 0)
    analog.drift(cim, 86400.0)
    x = calib[0]
    with torch.no_grad():
        a, d = cim(x), snn(x)
    assert not torch.equal(a, d)  # programming noise and drift change the outputs...
    assert (a.argmax(1) == d.argmax(1)).float().mean() > 0.85  # ...but not the decisions, mostly


def test_hardware_aware_training_of_a_spiking_network(digits_mlp) -> None:  # type: ignore[no-untyped-def]
    ann, _, calib, _ = digits_mlp
    snn = to_snn(copy.deepcopy(ann), calib, ConvertConfig(num_steps=4))
    cim, _ = to_crossbars(snn, AnalogConfig(mapping="standard", device="pcm", hwa=HWAConfig()), calib)
    cim.train()
    x, y = calib[0], torch.zeros(calib[0].shape[0], dtype=torch.long)
    a, b = cim(x), cim(x)
    assert not torch.equal(a, b)  # fresh device noise on every training forward
    nn.functional.cross_entropy(a, y).backward()
    w = next(m for _, m in analog.analog_layers(cim)).weight
    assert w.grad is not None and float(w.grad.abs().sum()) > 0  # BPTT through the neurons to the weights


def test_spike_levels_without_folding(digits_mlp) -> None:  # type: ignore[no-untyped-def]
    ann, _, calib, _ = digits_mlp
    snn = to_snn(copy.deepcopy(ann), calib, ConvertConfig(num_steps=4, fold_amplitudes=False))
    levels = spike_input_levels(snn, calib[:2])
    th = snn.conversion["thresholds"]
    assert sorted(levels.values()) == sorted(th.values())  # spikes of height λ, one level per layer
