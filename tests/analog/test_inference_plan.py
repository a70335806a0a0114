"""The inference plan of a programmed linear layer gives the general route's bits and follows the chip."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from torch import nn

from cimkit import analog, native
from cimkit.analog import inference_plan, layers

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels not built: {native.status()}")


@contextlib.contextmanager
def _general_route(monkeypatch: pytest.MonkeyPatch):
    """Every layer through mvm's general route (the plan never applies) inside the block."""
    with monkeypatch.context() as m:
        m.setattr(layers, "programmed_linear", lambda layer, x: None)
        yield


def _model(device: str, fast_noise: bool = True) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 40, bias=False), nn.ReLU(), nn.Linear(40, 512),
                        nn.ReLU(), nn.Linear(512, 24))  # the last: two row tiles of 256  # fmt: skip
    mapping = dataclasses.replace(analog.MAPPINGS.get("standard"), fast_noise=fast_noise)
    model = analog.convert(net, mapping, device).eval()
    analog.program(model, 5)
    return model


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = inference_plan._build

    def spy(layer, objs, versions):
        plan = real(layer, objs, versions)
        seen.append(int(plan is not None))
        return plan

    monkeypatch.setattr(inference_plan, "_build", spy)
    return seen


@pytest.mark.parametrize(
    ("device", "fast_noise"),
    [("pcm", True), ("rram", True), ("ideal", True), ("pcm", False)],  # read noise per forward (pcm, rram)
)
def test_plan_gives_the_general_routes_bits(device: str, fast_noise: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(device, fast_noise)
    analog.drift(model, 3600.0)
    assert model[6].geometry.n_tiles == 2
    built = _calls(monkeypatch)
    x = torch.randn(2, 37, 128)  # leading dims fold into the batch
    outs = []
    for general in (False, True):
        analog.program(model, 5)  # the same chip and read-noise stream for both
        analog.drift(model, 3600.0)
        with contextlib.ExitStack() as stack:
            if general:
                stack.enter_context(_general_route(monkeypatch))
            with torch.no_grad():
                outs.append([model(x), model(x)])  # two reads: fresh noise each (pcm, rram)
    assert built == [1, 1, 1, 1]  # every layer took the plan (built once; the second forward reused it)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert not torch.equal(outs[0][0], outs[0][1])  # the output noise differs between reads


def test_plan_follows_the_chip_and_the_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("pcm")
    x = torch.randn(50, 128)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        res = []
        for general in (False, True):
            analog.program(model, 5)
            analog.drift(model, 86400.0)
            with contextlib.ExitStack() as stack:
                if general:
                    stack.enter_context(_general_route(monkeypatch))
                with torch.no_grad():
                    res.append(model(x))
        return res[0], res[1]

    plan_out, ref = both()
    assert torch.equal(plan_out, ref)
    with torch.no_grad():  # an in-place change of a range and a bias: the plan is rebuilt / reads the bias
        model[0].output_range.mul_(1.5)
        model[0].bias.add_(0.25)
    plan_out2, ref2 = both()
    assert torch.equal(plan_out2, ref2) and not torch.equal(plan_out2, plan_out)


def test_no_plan_in_training_under_autograd_or_when_calibrating() -> None:
    model = _model("pcm")
    x = torch.randn(4, 128)
    lin = model[0]
    lin.train()
    assert inference_plan.programmed_linear(lin, x) is None
    lin.eval()
    assert inference_plan.programmed_linear(lin, x) is None  # autograd on
    with torch.no_grad():
        assert inference_plan.programmed_linear(lin, x) is not None
        assert inference_plan.programmed_linear(lin, x.double()) is None  # not float32
        assert inference_plan.programmed_linear(lin, x.t().contiguous().t()) is None  # not contiguous


def test_conversion_counter_counts_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("pcm")
    x = torch.randn(3, 128)
    counts = []
    for general in (False, True):
        for m in model.modules():
            if isinstance(m, layers.AnalogLayer):
                m.conversion_counter = {}
        with contextlib.ExitStack() as stack:
            if general:
                stack.enter_context(_general_route(monkeypatch))
            with torch.no_grad():
                model(x)
        counts.append([dict(m.conversion_counter) for m in model.modules() if isinstance(m, layers.AnalogLayer)])
    assert counts[0] == counts[1] and counts[0][0]["adc"] == 3 * 96
