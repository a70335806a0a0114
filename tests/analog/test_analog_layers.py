"""Analog layers and conversion: exactness with ideal parts, tiled ADC, slicing, round trips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cimkit import analog
from cimkit.analog import MAPPINGS, MappingConfig, mapping_preset, slice_codes, slice_coefficients
from cimkit.errors import ConfigError


def _ideal(**kw: object) -> MappingConfig:
    return mapping_preset("ideal", **kw)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(5, 7, 3, padding=1, stride=1)
        self.conv_s = nn.Conv2d(7, 6, 3, padding=0, stride=2, bias=False)
        self.fc = nn.Linear(6 * 3 * 3, 40)
        self.out = nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        h = F.relu(self.conv_s(h)).flatten(1)
        return self.out(F.relu(self.fc(h)))


@pytest.mark.parametrize("route", ["fold", "tiled"])
@pytest.mark.parametrize("tile_rows", [256, 20])
@pytest.mark.parametrize("pair", ["differential", "offset"])
def test_ideal_device_and_io_match_torch(route: str, tile_rows: int, pair: str) -> None:
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(5, 5, 8, 8)
    x1 = torch.randn(5, 3, 11)
    amodel = analog.convert(net, _ideal(tile_rows=tile_rows, pair=pair), "ideal")
    for _, layer in analog.analog_layers(amodel):
        layer.route = route
    with torch.no_grad():
        assert _rel_err(amodel(x), net(x)) < 1e-5
        assert _rel_err(amodel.c1(x1), net.c1(x1)) < 1e-5
        assert _rel_err(amodel.conv(x), net.conv(x)) < 1e-5
    if tile_rows == 20:
        assert amodel.fc.n_tiles == 3 and amodel.conv_s.n_tiles == 4  # 54 rows / 20; 7 ch * 9 / (2 ch)
    # the same on the autograd (training) path, and after programming an ideal chip
    assert _rel_err(amodel(x).detach(), net(x)) < 1e-5
    analog.program(amodel, 0)
    analog.drift(amodel, 3600.0)
    with torch.no_grad():
        assert _rel_err(amodel(x), net(x)) < 1e-5


def test_unfold_route_equals_grouped_route() -> None:
    # float64: the two routes compute the tile partial sums with different kernels (grouped conv vs
    # unfold + matmul) before the 8-bit DAC/ADC round them; in float32 a sum within ~1e-6 of a
    # rounding boundary could take the neighbouring code on some CPUs (one ADC step >> atol), in
    # float64 the kernels agree to ~1e-15, far inside the tolerance on any instruction set
    torch.manual_seed(1)
    net = Net().eval().double()
    x = torch.randn(4, 5, 8, 8).double()
    outs = []
    for route in ("grouped", "unfold"):
        m = analog.convert(net, mapping_preset("standard", conv_route=route, tile_rows=20, out_noise=0.0), "ideal")
        with torch.no_grad():
            outs.append(m(x))
    assert torch.allclose(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_tiled_adc_matches_hand_computed_per_tile_reference() -> None:
    torch.manual_seed(2)
    lin = nn.Linear(10, 3)
    cfg = _ideal(tile_rows=4, adc_bits=4, adc_range=2.0, dac_range_mode="fixed", dac_range=1.0)  # 3 tiles of 4 rows
    model = analog.convert(nn.Sequential(lin), cfg, "ideal")
    layer = model[0]
    assert (layer.n_tiles, layer.rows) == (3, 4)
    x = torch.randn(6, 10)
    with torch.no_grad():
        y = model(x)
    # reference: one tile at a time; w_max per (tile, column); ADC of 4 bits = 7 levels per sign
    w = lin.weight.detach()  # (3, 10)
    wp = torch.cat([w, torch.zeros(3, 2)], 1)  # 12 rows
    xp = torch.cat([x, torch.zeros(6, 2)], 1)
    ref = torch.zeros(6, 3)
    for t in range(3):
        wt = wp[:, 4 * t : 4 * t + 4]  # (N, rows)
        w_max = wt.abs().amax(1)  # (N,)
        z = xp[:, 4 * t : 4 * t + 4] @ (wt / w_max[:, None]).T  # (B, N) normalised partial sums
        zq = torch.round(torch.clamp(z / 2.0, -1, 1) * 7) / 7 * 2.0
        ref += zq * w_max
    ref += lin.bias.detach()
    # portable in float32: the nearest ADC rounding boundary is 3.6e-3 codes away from every partial
    # sum here, and either float32 dot product (4 terms, |z| < 8) is within 4·2^-24·8·7/2 ≈ 7e-6 codes
    # of the exact one, so no code can differ between the two computations on any CPU
    assert torch.allclose(y, ref, atol=1e-5)
    assert not torch.allclose(y, lin(x), atol=1e-3)  # the ADC really quantizes


def test_slice_codes_reconstruct() -> None:
    v = torch.rand(1000)
    for n, b in ((4, 2), (2, 4), (3, 3)):
        s = slice_codes(v, n, b)
        c = slice_coefficients(n, b)
        assert s.shape == (n, 1000) and float(s.min()) >= 0 and float(s.max()) <= 1
        q = torch.round(v * (2 ** (n * b) - 1)) / (2 ** (n * b) - 1)
        assert torch.allclose((s * c[:, None]).sum(0), q, atol=1e-6)
        assert float(c.sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("pair", ["differential", "offset"])
def test_bit_slicing_with_ideal_adc_equals_unsliced(pair: str) -> None:
    torch.manual_seed(3)
    net = Net().eval()
    x = torch.randn(4, 5, 8, 8)
    sliced = analog.convert(net, _ideal(n_slices=4, slice_bits=2, tile_rows=30, pair=pair), "ideal")
    for _, layer in analog.analog_layers(sliced):
        layer.route = "tiled"  # every slice through its own (ideal) conversion
    assert sliced.conv.n_slices == 4
    # the unsliced reference holds the same 8-bit weights in one cell
    ref_net = Net().eval()
    ref_net.load_state_dict(net.state_dict())
    with torch.no_grad():
        for name, layer in analog.analog_layers(sliced):
            getattr(ref_net, name).weight.copy_(layer.effective_weight())
        unsliced = analog.convert(ref_net, _ideal(tile_rows=30, pair=pair), "ideal")
        assert _rel_err(sliced(x), unsliced(x)) < 1e-5
        # and the weights really are 8-bit: u = w / w_max (per tile and column) is a multiple of 1/255
        fc = sliced.fc
        g = fc.geometry
        u = g.to_tiles(fc.effective_weight()) / fc.weight_scale(g.to_tiles(fc.weight)).unsqueeze(1)
        steps = u * 255
        assert torch.allclose(steps, steps.round(), atol=1e-3)
        assert not torch.allclose(fc.effective_weight(), fc.weight, atol=1e-4)


def test_bit_serial_with_ideal_adc_equals_parallel_dac() -> None:
    torch.manual_seed(4)
    net = Net().eval()
    x = torch.randn(3, 5, 8, 8)
    par = analog.convert(net, _ideal(dac_bits=6, dac_range_mode="dynamic"), "ideal")
    ser = analog.convert(net, _ideal(dac_bits=6, dac_range_mode="dynamic", bit_serial=True), "ideal")
    for _, layer in analog.analog_layers(ser):
        layer.route = "tiled"  # one (ideal) conversion per bit plane
    with torch.no_grad():
        assert _rel_err(ser(x), par(x)) < 1e-5
        assert _rel_err(par(x), net(x)) > 1e-4  # 6-bit DAC is not exact


def test_standard_inference_and_training_paths_agree_without_noise() -> None:
    torch.manual_seed(5)
    net = Net().eval()
    x = torch.randn(4, 5, 8, 8)
    for preset in ("standard", "sliced_bitserial"):
        m = analog.convert(net, mapping_preset(preset, out_noise=0.0, tile_rows=40), "ideal").eval()
        with torch.no_grad():
            y0 = m(x)
        y1 = m(x)  # autograd path: STE quantizers in normalised units
        assert y1.requires_grad
        # identical up to rare rounding ties of the converters (a few LSBs on few outputs)
        assert float((y0 - y1.detach()).abs().mean()) < 1e-3 * float(y0.abs().mean())


@pytest.mark.parametrize("pair", ["differential", "offset"])
@pytest.mark.parametrize("dac", ["dynamic", "fixed"])
def test_inference_route_scales_outputs_like_the_training_route(pair: str, dac: str) -> None:
    # the inference route applies the per-column digital coefficients and the per-sample DAC full
    # scale in place on the partial sums; in float64 (no converter rounding ties) it must give the
    # training route's outputs: one tile and three tiles, convolutions and linear layers, with biases
    torch.manual_seed(11)
    net = Net().eval().double()
    x = torch.randn(4, 5, 8, 8).double()
    for tile_rows in (256, 20):
        cfg = mapping_preset("standard", out_noise=0.0, tile_rows=tile_rows, pair=pair, dac_range_mode=dac,
                             dac_range=3.0)  # fmt: skip
        m = analog.convert(net, cfg, "ideal").eval()
        with torch.no_grad():
            y0 = m(x)
        y1 = m(x).detach()  # the autograd route (straight-through converters)
        assert torch.allclose(y0, y1, rtol=1e-9, atol=1e-9 * float(y1.abs().max()))


def test_conversion_round_trip_and_selection() -> None:
    torch.manual_seed(6)
    net = Net()
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    m = analog.convert(net, "standard", "pcm")
    assert {n for n, _ in analog.analog_layers(m)} == {"c1", "conv", "conv_s", "fc", "out"}
    assert set(sd) <= set(m.state_dict())  # parameter names kept
    back = analog.to_digital(m)
    assert all(type(a) is type(b) for a, b in zip(back.modules(), net.modules()))
    assert back.state_dict().keys() == sd.keys()
    assert all(torch.equal(back.state_dict()[k], sd[k]) for k in sd)
    x = torch.randn(2, 5, 8, 8)
    assert torch.equal(back(x), net(x))
    # selection: patterns, types, first/last stay digital, filter
    m2 = analog.convert(net, include=["c*", "fc"], exclude=["c1"])
    assert {n for n, _ in analog.analog_layers(m2)} == {"conv", "conv_s", "fc"}
    m3 = analog.convert(net, keep_first=True, keep_last=True)
    assert {n for n, _ in analog.analog_layers(m3)} == {"conv", "conv_s", "fc"}
    m4 = analog.convert(net, layer_types=["linear"], filter=lambda n, mod: mod.out_features > 20)
    assert {n for n, _ in analog.analog_layers(m4)} == {"fc"}
    assert isinstance(net.conv, nn.Conv2d)  # not in place by default
    with pytest.raises(ConfigError):
        analog.convert(net, layer_types=["lstm"])


def test_same_seed_same_programmed_weights_and_reads() -> None:
    torch.manual_seed(7)
    net = Net().eval()
    x = torch.randn(3, 5, 8, 8)
    m = analog.convert(net, "standard", "pcm")

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        analog.program(m, seed)
        analog.drift(m, 3600.0)
        g = m.fc.g_prog.clone()
        with torch.no_grad():
            return g, m(x), m(x)

    g1, a1, b1 = run(11)
    g2, a2, b2 = run(11)
    g3, _, _ = run(12)
    assert torch.equal(g1, g2) and torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(g1, g3)
    assert not torch.equal(a1, b1)  # fresh read noise on every forward


def test_global_and_column_drift_compensation() -> None:
    torch.manual_seed(8)
    lin = nn.Sequential(nn.Linear(200, 50))
    year = 365 * 86400.0
    res = {}
    for comp in ("none", "global", "column"):
        m = analog.convert(lin, mapping_preset("ideal", compensation=comp), "pcm").eval()
        analog.program(m, 0)
        analog.drift(m, year)
        with torch.no_grad():
            w = m[0].effective_weight()
        w0 = lin[0].weight.detach()
        res[comp] = float(w.abs().mean() / w0.abs().mean())
        if comp == "column":
            col = w.abs().mean(1) / w0.abs().mean(1)
            assert float((col - 1).abs().max()) < 0.15
    # uncompensated: the weights shrink by about the mean drift factor ((1y + 20 s)/20 s)^-0.06 ~ 0.44
    assert 0.3 < res["none"] < 0.7
    assert abs(res["global"] - 1.0) < 0.1 and abs(res["column"] - 1.0) < 0.1


def test_calibration_sets_percentile_ranges() -> None:
    torch.manual_seed(9)
    net = Net().eval()
    m = analog.convert(net, "calibrated", "ideal")
    batches = [torch.randn(8, 5, 8, 8) for _ in range(3)]
    assert analog.calibrate(m, batches) is m
    ranges = analog.ranges(m)
    x_all = torch.cat(batches)
    expected = float(torch.quantile(x_all.abs().flatten(), 0.9999))
    assert ranges["conv"]["dac"] == pytest.approx(expected, rel=0.02)
    assert float(m.conv.input_range) == pytest.approx(ranges["conv"]["dac"])
    assert all(v["adc"] > 0 for v in ranges.values())
    assert ranges["conv"]["adc"] != analog.mapping_preset("calibrated").adc_range  # really calibrated
    with torch.no_grad():
        assert _rel_err(m(batches[0]), net(batches[0])) < 0.1


def test_mapping_presets_and_validation() -> None:
    assert {"ideal", "standard", "calibrated", "learned", "sliced_bitserial", "offset"} <= set(MAPPINGS.list())
    for name in MAPPINGS.list():
        cfg = MAPPINGS.get(name)
        assert MappingConfig.from_toml(cfg.to_toml()) == cfg
    for bad in ({"n_slices": 2}, {"adc_range_mode": "dynamic"}, {"tile_rows": 0}, {"bit_serial": True, "dac_bits": 0},
                {"pair": "triple"}, {"n_slices": 5, "slice_bits": 5}):  # fmt: skip
        with pytest.raises(ConfigError):
            MappingConfig.from_dict(bad)
    with pytest.raises(ConfigError):
        analog.convert(nn.Sequential(nn.Conv2d(1, 2, 5)), _ideal(tile_rows=16))  # 25 rows per channel
    with pytest.raises(ConfigError):
        analog.drift(analog.convert(nn.Sequential(nn.Linear(3, 2))), 10.0)  # not programmed


def test_range_quantize_ste_and_lsq_gradients() -> None:
    x = torch.tensor([-3.0, -0.26, 0.1, 0.74, 2.5], requires_grad=True)
    r = torch.tensor(1.0, requires_grad=True)
    y = analog.range_quantize(x, r, 3, learn_range=True)
    assert torch.allclose(y, torch.tensor([-1.0, -1 / 3, 0.0, 2 / 3, 1.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    q = torch.tensor([-1 / 3, 0.0, 2 / 3])
    s = torch.tensor([-0.26, 0.1, 0.74])
    expected = ((q - s).sum() + (-1.0) + 1.0) / math.sqrt(5 * 3)  # LSQ grad scale 1/sqrt(numel * levels)
    assert float(r.grad) == pytest.approx(float(expected), rel=1e-5)


def test_fast_noise_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    a = analog.gaussian_noise((200_000,), g)
    b = analog.gaussian_noise((200_000,), g)
    assert abs(float(a.mean())) < 0.01 and float(a.std()) == pytest.approx(1.0, rel=0.01)
    assert not torch.equal(a, b)
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.01


@pytest.mark.parametrize("f_grad", [True, False])  # with and without a gradient for the digital factor f
@pytest.mark.parametrize("scale", [6.0, 0.5])  # with and without codes at full scale
def test_fused_adc_combine_gradients_match_reference(scale: float, f_grad: bool) -> None:
    from cimkit.analog.periphery import adc_combine

    torch.manual_seed(10)
    z0 = torch.randn(4, 3, 5, 5) * scale
    noise = torch.randn(4, 3, 5, 5)
    f0 = (torch.rand(4, 3) + 0.5).view(4, 3, 1, 1)
    b0 = torch.randn(3)
    zl, f, bias = (t.clone().requires_grad_() for t in (z0, f0, b0))
    f.requires_grad_(f_grad)
    z_in = zl * 1.0  # a fresh tensor, as a conv output would be
    y = adc_combine(z_in, noise, 0.3, 7, f, bias)
    # no code at full scale and no gradient for f: the output is written over the partial sums
    assert (y.data_ptr() == z_in.data_ptr()) == (scale < 1.0 and not f_grad)
    # reference with plain autograd: STE through round, gradient zero where the code is at full scale
    zr, fr, br = (t.clone().requires_grad_() for t in (z0, f0, b0))
    t = zr + 0.3 * noise
    codes = torch.round(torch.clamp(t, -7, 7))
    ste = codes.detach() + (t - t.detach()) * (codes.abs() < 7).float()
    ref = br.view(1, 3, 1, 1) + fr * ste
    assert torch.allclose(y, ref.detach())
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (zl, f, bias) if f_grad else (zl, bias), g)
    ref_grads = torch.autograd.grad(ref, (zr, fr, br) if f_grad else (zr, br), g)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-5)
