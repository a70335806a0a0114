"""The training plan of a linear layer gives the general route's bits, forward and backward."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cimkit import analog, native
from cimkit.analog import HWAConfig, layers, training_plan
from cimkit.analog.hwa import AdditiveNoise, ChannelNoise, set_weight_noise

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels not built: {native.status()}")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 200, bias=False), nn.ReLU(),
                         nn.Linear(200, 512), nn.ReLU(), nn.Linear(512, 40), nn.ReLU(),  # 512 rows: two tiles
                         nn.Linear(40, 7))  # fmt: skip


def _three_tiles() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 600), nn.ReLU(), nn.Linear(600, 9))  # 600 rows: three tiles of 200


def _train(model: nn.Module, x0: torch.Tensor, general: bool, monkeypatch: pytest.MonkeyPatch, steps: int = 2,
           x_grad: bool = True) -> list:  # fmt: skip
    """Two forward/backward passes (the noise streams advance): outputs, input and parameter gradients."""
    out = []
    with monkeypatch.context() as m:
        if general:
            m.setattr(layers, "trained_linear", lambda layer, x: None)
        for _ in range(steps):
            model.zero_grad()
            x = x0.clone().requires_grad_(x_grad)
            y = model(x)
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            out.append((y.detach().clone(), x.grad.clone() if x_grad else None, grads))
    return out


def _assert_same(a: list, b: list) -> None:
    for (ya, xa, pa), (yb, xb, pb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb)
        assert (xa is None and xb is None) or torch.equal(xa, xb)
        assert len(pa) == len(pb) > 0 and all(torch.equal(p, q) for p, q in zip(pa, pb, strict=True))


def _converted(net: nn.Module, device: str, noise, fast_noise: bool = True, adc_range: float | None = None):
    mapping = dataclasses.replace(analog.MAPPINGS.get("standard"), fast_noise=fast_noise)
    model = analog.convert(net, mapping, device)
    if noise is not None:
        set_weight_noise(model, noise, seed=3)
    if adc_range is not None:
        for _, layer in analog.analog_layers(model):
            with torch.no_grad():
                layer.output_range.fill_(adc_range)
    return model.train()


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Tiles of every layer the plan ran (recorded by a wrapper of the plan's node)."""
    seen: list[int] = []
    real = training_plan._TrainLinear.apply

    def apply(x, w, bias, layer, plan, gen):
        seen.append(plan.tiles)
        return real(x, w, bias, layer, plan, gen)

    monkeypatch.setattr(training_plan._TrainLinear, "apply", apply)
    return seen


@pytest.mark.parametrize(
    ("device", "noise", "fast_noise"),
    [("pcm", ChannelNoise(0.03), True), ("rram", ChannelNoise(0.05), True), ("ideal", None, True),
     ("pcm", AdditiveNoise(0.02), True), ("pcm", ChannelNoise(0.03), False)],
    ids=["pcm-channel", "rram-channel", "ideal-none", "pcm-additive", "pcm-channel-fresh"],
)
def test_plan_gives_the_general_routes_bits(device, noise, fast_noise, monkeypatch) -> None:
    x0 = torch.randn(33, 128)
    model = _converted(_net(), device, noise, fast_noise)
    tiles = [layer.geometry.n_tiles for _, layer in analog.analog_layers(model)]
    assert tiles == [1, 1, 1, 2, 1]
    general = _train(model, x0, True, monkeypatch)
    model = _converted(_net(), device, noise, fast_noise)  # the same generators, from the start
    seen = _spy(monkeypatch)
    plan = _train(model, x0, False, monkeypatch)
    assert seen == tiles * 2  # every layer, both passes, through the plan
    _assert_same(plan, general)


@pytest.mark.parametrize("adc_range", [0.2, 0.5])  # codes at full scale: the straight-through mask
def test_plan_gives_the_general_routes_bits_when_the_adc_clips(adc_range, monkeypatch) -> None:
    x0 = torch.randn(20, 128) * 3.0
    general = _train(_converted(_net(), "pcm", ChannelNoise(0.03), adc_range=adc_range), x0, True, monkeypatch)
    plan = _train(_converted(_net(), "pcm", ChannelNoise(0.03), adc_range=adc_range), x0, False, monkeypatch)
    _assert_same(plan, general)
    grads = plan[0][2]
    assert any(bool((g == 0).any()) for g in grads) and all(bool((g != 0).any()) for g in grads)


def test_three_tiles_and_frozen_weights_and_inputs_without_grad(monkeypatch) -> None:
    x0 = torch.randn(11, 48)
    model = _converted(_three_tiles(), "rram", ChannelNoise(0.03))
    assert [layer.geometry.n_tiles for _, layer in analog.analog_layers(model)] == [1, 3]
    general = _train(model, x0, True, monkeypatch, x_grad=False)
    model = _converted(_three_tiles(), "rram", ChannelNoise(0.03))
    _assert_same(_train(model, x0, False, monkeypatch, x_grad=False), general)
    # a frozen base weight (e.g. under LoRA): only the input and the bias take gradients
    for frozen in (True, False):
        model = _converted(_three_tiles(), "rram", ChannelNoise(0.03))
        model[2].weight.requires_grad_(False)
        runs = _train(model, x0, frozen, monkeypatch)
        if frozen:
            ref = runs
        else:
            _assert_same(runs, ref)
    assert model[2].weight.grad is None


def test_plan_counts_conversions_like_the_general_route(monkeypatch) -> None:
    counts = []
    for general in (True, False):
        model = _converted(_net(), "pcm", ChannelNoise(0.03))
        counter: dict[str, int] = {}
        for _, layer in analog.analog_layers(model):
            layer.conversion_counter = counter
        _train(model, torch.randn(5, 128), general, monkeypatch, steps=1)
        counts.append(counter)
    assert counts[0] == counts[1] and counts[0]["adc"] == 5 * (96 + 200 + 512 + 2 * 40 + 7)


@pytest.mark.parametrize(
    "case", ["eval-programmed", "no-grad", "float64", "learned-adc", "bit-serial", "offset", "sliced", "fold"]
)
def test_plan_stays_out_where_it_does_not_apply(case, monkeypatch) -> None:
    std = analog.MAPPINGS.get("standard")
    mapping = {
        "learned-adc": dataclasses.replace(std, adc_range_mode="learned"),
        "bit-serial": dataclasses.replace(std, bit_serial=True),
        "offset": dataclasses.replace(std, pair="offset"),
        "sliced": dataclasses.replace(std, n_slices=2, slice_bits=2),
        "fold": dataclasses.replace(std, adc_bits=0, out_noise=0.0),
    }.get(case, std)
    net = _three_tiles().double() if case == "float64" else _three_tiles()
    model = analog.convert(net, mapping, "pcm", hwa=HWAConfig(noise="additive_channel", noise_std=0.03)).train()
    x = torch.randn(4, 48, dtype=torch.float64 if case == "float64" else torch.float32, requires_grad=True)
    if case == "eval-programmed":
        analog.program(model, 0)
        model.eval()
    seen = _spy(monkeypatch)
    if case == "no-grad":
        with torch.no_grad():
            model(x)
    else:
        model(x).sum().backward()
    assert seen == []


def test_plan_follows_the_mapping_and_the_adc_range(monkeypatch) -> None:
    model = _converted(_three_tiles(), "pcm", ChannelNoise(0.03))
    x = torch.randn(4, 48, requires_grad=True)
    model(x).sum().backward()
    layer = model[0]
    first = layer.__dict__["_training_plan"][2]
    model(x).sum().backward()
    assert layer.__dict__["_training_plan"][2] is first  # reused
    with torch.no_grad():
        layer.output_range.mul_(2.0)  # an in-place edit: a new gain
    model(x).sum().backward()
    assert layer.__dict__["_training_plan"][2].gain == pytest.approx(first.gain / 2.0)
    layer.set_mapping(dataclasses.replace(layer.mapping, bit_serial=True))
    model(x).sum().backward()
    assert layer.__dict__["_training_plan"][2] is None  # the new mapping is not one the plan covers


def test_training_through_the_folded_route_with_a_per_sample_dac() -> None:
    # an ideal ADC folds the chain into one weight; the per-sample DAC range used to break its backward
    fold = dataclasses.replace(analog.MAPPINGS.get("standard"), adc_bits=0, out_noise=0.0)
    torch.manual_seed(0)
    lin = nn.Linear(48, 9)
    model = analog.convert(nn.Sequential(lin), fold, "ideal").train()
    x = torch.randn(6, 48, requires_grad=True)
    gy = torch.randn(6, 9)
    model(x).backward(gy)
    r = x.detach().abs().amax(1, keepdim=True)
    xq = (x.detach() * (127 / r)).round() * (r / 127)  # the 8-bit per-sample DAC
    torch.testing.assert_close(model[0].weight.grad, gy.t() @ xq, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, gy @ lin.weight.detach(), rtol=1e-5, atol=1e-6)  # straight through
