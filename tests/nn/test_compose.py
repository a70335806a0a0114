"""Transforms stack and undo: quantize -> analog programs the quantized weights; every transform undoes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cimkit
from cimkit import analog
from cimkit.analog import AnalogConfig, AnalogLayer
from cimkit.errors import ConfigError
from cimkit.nn import Rules, apply_, select, undo_
from cimkit.quant import QuantConfig, QuantLayer, calibrate, quantize_


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1)  # (B, 128)
        return self.fc2(F.relu(self.fc1(h)))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return Net().eval()


X = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _ideal() -> AnalogConfig:
    return AnalogConfig(mapping="ideal", device="ideal")


@pytest.mark.parametrize("qcfg", [QuantConfig(w_bits=4, a_bits=8), QuantConfig(w_mode="binary", a_bits=4),
                                  QuantConfig(w_mode="ternary_twn", a_bits=None), QuantConfig(w_bits=3, a_bits=6,
                                  w_symmetric=False)], ids=lambda c: c.label())  # fmt: skip
def test_quantize_then_ideal_analog_equals_the_quantized_model(qcfg: QuantConfig) -> None:
    # float64: the analog route sums partial products in another order than F.conv/F.linear, and an
    # activation quantizer downstream could turn a float32 rounding difference into a whole step
    q = quantize_(_net().double(), qcfg)
    x = X.double()
    calibrate(q, [x])
    with torch.no_grad():
        ref = q(x)
    a = apply_(q, _ideal())  # in place: the quantized layers become analog-quantized layers
    assert all(isinstance(m, AnalogLayer) and isinstance(m, QuantLayer) for _, m in analog.analog_layers(a))
    analog.program(a, 0)
    with torch.no_grad():
        got = a(x)
    assert torch.allclose(got, ref, atol=1e-9 * float(ref.abs().max()), rtol=1e-9)


def _pair_levels(layer: AnalogLayer) -> torch.Tensor:
    """Distinct programmed levels (G+ - G-) / g_range per column, as integers on the grid."""
    g = layer.chip.g_prog  # (S, D, T, R, N) µS
    a = (g[:, 0] - g[:, 1]) / layer.device_cfg.g_range  # (S, T, R, N)
    return a


def test_a_4bit_grid_programs_exactly_its_levels() -> None:
    q = quantize_(_net(), QuantConfig(w_bits=4, a_bits=8))
    calibrate(q, [X])
    a = analog.convert(q, "standard", "ideal")
    analog.program(a, 0)
    for _, layer in analog.analog_layers(a):
        levels = _pair_levels(layer) * 7  # a 4-bit symmetric grid: codes -7..7 at full scale 7·step
        assert torch.allclose(levels, levels.round(), atol=1e-4)
        assert int(levels.round().unique().numel()) <= 15
        # and they are the layer's codes: A·w_max equals the quantized weight
        g = layer.geometry
        wq = g.to_tiles(layer.transformed_weight().detach())
        assert torch.allclose(_pair_levels(layer)[0] * layer.chip.w_scale.unsqueeze(1), wq, atol=1e-6)


def test_binary_weights_on_rram_use_two_levels_per_device() -> None:
    q = quantize_(_net(), QuantConfig(w_mode="binary", a_bits=4))
    calibrate(q, [X])
    dev = analog.device_preset("rram", prog_coeffs=(0.0,), read_noise_std=0.0, relax_times=(), relax_coeffs=(),
                               drift_model="none")  # exact programming: the levels are the targets
    a = analog.convert(q, "standard", dev)
    analog.program(a, 0)
    for _, layer in analog.analog_layers(a):
        g = layer.chip.g_prog
        for d in range(2):
            vals = g[:, d].unique()
            assert set(vals.tolist()) == {dev.g_min, dev.g_max}
        # every pair is (g_max, g_min) or (g_min, g_max): one device on, one off
        assert torch.equal(g[:, 0] + g[:, 1], torch.full_like(g[:, 0], dev.g_min + dev.g_max))


def test_ternary_uses_three_pair_levels() -> None:
    q = quantize_(_net(), QuantConfig(w_mode="ternary_twn", a_bits=8))
    calibrate(q, [X])
    a = analog.convert(q, "standard", "ideal")
    analog.program(a, 0)
    vals = _pair_levels(a.fc1).unique()
    assert torch.allclose(vals, torch.tensor([-1.0, 0.0, 1.0]))


def test_per_layer_mapping_overrides_reach_the_layers() -> None:
    cfg = AnalogConfig(mapping="standard", device="pcm",
                       overrides={"@first": {"n_slices": 2, "slice_bits": 4, "adc_bits": 10}, "fc2": {"device": "rram"},
                                  "fc*": {"tile_rows": 64}})  # fmt: skip
    a = apply_(_net(), cfg)
    assert (a.conv.mapping.n_slices, a.conv.mapping.adc_bits, a.conv.n_slices) == (2, 10, 2)
    assert a.fc1.mapping.n_slices == 1 and a.fc1.mapping.adc_bits == 8
    assert a.fc1.mapping.tile_rows == 64 and a.fc1.n_tiles == 2 and a.conv.mapping.tile_rows == 256
    assert a.fc2.device_cfg.g_max == analog.DEVICES.get("rram").g_max
    assert a.conv.device_cfg.g_max == analog.DEVICES.get("pcm").g_max
    with pytest.raises(ConfigError, match="adc_bitz"):
        AnalogConfig(overrides={"@first": {"adc_bitz": 3}})
    with pytest.raises(ConfigError, match="overrides.@last.adc_bits"):
        AnalogConfig(overrides={"@last": {"adc_bits": 1}})


def test_skip_and_filter_keep_layers_digital() -> None:
    a = apply_(_net(), AnalogConfig(skip=["@last"]), filter_fn=lambda n, m: n != "conv")
    kinds = {n: isinstance(m, AnalogLayer) for n, m in a.named_children()}
    assert kinds == {"conv": False, "fc1": True, "fc2": False}


def _transforms() -> dict[str, list[object]]:
    return {
        "quantize": [QuantConfig(w_bits=4, a_bits=4, lsq=True)],
        "analog": [AnalogConfig(mapping="sliced_bitserial", device="rram_saf")],
        "quantize+analog": [QuantConfig(w_mode="binary", a_bits=4), AnalogConfig(device="rram_saf")],
    }


@pytest.mark.parametrize("name", list(_transforms()))
def test_every_transform_undoes_to_the_original_state_dict(name: str) -> None:
    net = _net()
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    types = [type(m) for m in net.modules()]
    m = net
    for cfg in _transforms()[name]:
        m = apply_(m, cfg)
        if isinstance(cfg, QuantConfig):
            calibrate(m, [X])
    if any(isinstance(x, AnalogLayer) for x in m.modules()):
        analog.program(m, 1)
        analog.drift(m, 3600.0)
    with torch.no_grad():
        m(X)
    out = undo_(m)
    assert [type(x) for x in out.modules()] == types
    sd = out.state_dict()
    assert sd.keys() == ref.keys()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_transform_registry_dispatches_on_config_type() -> None:
    assert {"quantize", "analog"} <= set(cimkit.nn.TRANSFORMS.list())
    with pytest.raises(ConfigError, match="no transform"):
        apply_(_net(), object())


def test_drift_does_not_rewrite_the_mapping() -> None:
    a = analog.convert(_net(), "standard", "pcm")
    analog.program(a, 0)
    before = {n: m.mapping for n, m in analog.analog_layers(a)}
    analog.drift(a, 86400.0, compensation="none")
    assert {n: m.mapping for n, m in analog.analog_layers(a)} == before
    assert all(m.chip.compensation.value == "none" for _, m in analog.analog_layers(a))
    analog.drift(a, 86400.0)
    assert all(m.chip.compensation == m.mapping.compensation for _, m in analog.analog_layers(a))


def test_walk_selects_transformed_layers_and_resolves_rules() -> None:
    q = quantize_(_net(), "w8a8")
    refs = select(q)
    assert [r.name for r in refs] == ["conv", "fc1", "fc2"] and refs[0].count == 3
    assert [r.name for r in select(q, include=["fc*"], skip=["@last"])] == ["fc1"]
    rules = Rules({"@first": {"w_bits": 2}, "fc*": {"w_bits": 6}, "@last": {"a_bits": 4}})
    assert [rules.fields_for(r) for r in refs] == [{"w_bits": 2}, {"w_bits": 6}, {"w_bits": 6, "a_bits": 4}]
    with pytest.raises(ConfigError, match="did you mean 'w_bits'"):
        Rules({"x": {"w_bitz": 1}}, allowed=["w_bits", "a_bits"])


def test_parametrized_layers_are_found_and_quantized() -> None:
    from torch.nn.utils import parametrize

    class Half(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * 0.5

    net = _net()
    parametrize.register_parametrization(net.fc1, "weight", Half())
    with torch.no_grad():
        ref_w = net.fc1.weight.clone()
    q = quantize_(net, QuantConfig(w_bits=8, a_bits=None))
    assert isinstance(q.fc1, QuantLayer)
    assert torch.allclose(q.fc1.transformed_weight(), ref_w, atol=float(ref_w.abs().max()) / 100)


def test_quantizing_layers_already_on_crossbars_is_an_error() -> None:
    # the quantized layer's forward would be digital: the crossbars would silently drop out
    a = analog.convert(_net(), "standard", "ideal")
    with pytest.raises(ConfigError, match="quantize before mapping onto crossbars"):
        quantize_(a, QuantConfig(w_bits=4, a_bits=8))
