"""The one verb: swapping layers, overrides, calibration, QAT gradients, BN folding, accounting."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.models import create
from cimkit.quant import (
    ActQuantizer,
    FoldedBN,
    QuantConfig,
    QuantConv1d,
    QuantConv2d,
    QuantLayer,
    QuantLinear,
    account,
    calibrate,
    convert_,
    dequantize_,
    fold_bn_,
    layer_bits,
    quantizable_layers,
    quantize_,
)

torch.set_num_threads(1)


class Mixed(nn.Module):
    """Conv1d, Conv2d+BN (in and out of Sequential), Linear; a non-Sequential forward."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.seq = nn.Conv1d(8, 6, 3, padding=1)
        self.head = nn.Linear(6 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))  # (B, 4, 8, 8)
        x = self.block(x)  # (B, 8, 4, 4)
        x = self.seq(x.flatten(2))  # (B, 6, 16)
        return self.head(x.flatten(1))  # (B, 5)


def _trained_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give BatchNorms non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_quantizable_layers_in_order() -> None:
    names = [n for n, _ in quantizable_layers(Mixed())]
    assert names == ["stem", "block.0", "seq", "head"]


def test_reversible_swap_gives_back_an_equal_model(x: torch.Tensor) -> None:
    model = Mixed().eval()
    model.head.register_forward_hook(lambda m, i, o: None)
    ref = copy.deepcopy(model)
    params_before = {n: p for n, p in model.named_parameters()}
    quantize_(model, QuantConfig(w_bits=4, a_bits=4))
    assert isinstance(model.stem, QuantConv2d) and isinstance(model.seq, QuantConv1d)
    assert isinstance(model.head, QuantLinear) and isinstance(model.head, nn.Linear)
    assert not torch.equal(model(x), ref(x))
    dequantize_(model)
    assert repr(model) == repr(ref)
    assert [type(m) for m in model.modules()] == [type(m) for m in ref.modules()]
    sd, sd_ref = model.state_dict(), ref.state_dict()
    assert sd.keys() == sd_ref.keys() and all(torch.equal(sd[k], sd_ref[k]) for k in sd)
    assert all(p is params_before[n] for n, p in model.named_parameters())  # the same Parameter objects
    assert len(model.head._forward_hooks) == 1
    assert torch.equal(model(x), ref(x))


def test_single_layer_model_and_requantize(x: torch.Tensor) -> None:
    lin = nn.Linear(4, 3)
    q = quantize_(lin, "w8a8")
    assert isinstance(q, QuantLinear) and q.weight is lin.weight
    assert type(dequantize_(q)) is nn.Linear
    model = Mixed()
    quantize_(model, QuantConfig(w_bits=8))
    quantize_(model, QuantConfig(w_bits=3, a_bits=None))  # re-quantize with a new config
    assert set(layer_bits(model).values()) == {(3, None)}


def test_overrides_skip_and_filter(x: torch.Tensor) -> None:
    model = Mixed()
    cfg = QuantConfig(
        w_mode="binary", a_bits=4, overrides={"@first": {"w_bits": 8, "a_bits": 8}, "@last": {"w_bits": 8}}
    )
    quantize_(model, cfg, filter_fn=lambda name, m: name != "seq")
    assert layer_bits(model) == {"stem": (8, 8), "block.0": (1, 4), "head": (8, 4)}
    assert type(model.seq) is nn.Conv1d
    model = quantize_(Mixed(), QuantConfig(skip=["block.*", "head"]))
    assert sorted(layer_bits(model)) == ["seq", "stem"]
    with pytest.raises(ConfigError, match="no nn.Linear"):
        quantize_(nn.ReLU(), "w8a8")


def test_calibration_picks_unsigned_grid_after_relu_and_matches_observed_range(x: torch.Tensor) -> None:
    model = create("lenet5", input_size=(8, 8))
    quantize_(model, QuantConfig(a_bits=4))
    calibrate(model, [x, (x * 2, torch.zeros(8))])
    first, second = model.features[0].a_quant, model.features[3].a_quant
    assert not bool(first.unsigned) and bool(second.unsigned)
    assert (first.qmin, first.qmax) == (0, 15)  # asymmetric: unsigned grid with a zero point
    lo, hi = min(0.0, float((2 * x).min())), float((2 * x).max())
    assert first.scale.item() == pytest.approx((hi - lo) / 15, rel=1e-5)
    assert 0 < first.zero_point.item() < 15
    assert model.training  # calibration runs in eval mode and restores the training flag
    y = model(x)
    assert torch.isfinite(y).all()


def test_uncalibrated_activation_quantizer_initializes_from_first_batch(x: torch.Tensor) -> None:
    model = quantize_(Mixed(), "w8a8")
    model(x)
    assert all(bool(m.calibrated) for m in model.modules() if isinstance(m, ActQuantizer))


@pytest.mark.parametrize("cfg", [
    QuantConfig(w_bits=4, a_bits=4, lsq=True),
    QuantConfig(w_bits=4, a_bits=4, w_symmetric=False, a_symmetric=True),
    QuantConfig(w_mode="binary", a_bits=4),
    QuantConfig(w_mode="ternary_twn", a_bits=8),
    QuantConfig(w_mode="ternary_absmean", a_bits=None),
])  # fmt: skip
def test_qat_gradients_flow(cfg: QuantConfig, x: torch.Tensor) -> None:
    model = quantize_(Mixed().train(), cfg)
    calibrate(model, [x])
    model.train()
    loss = model(x).pow(2).mean()
    loss.backward()
    for name, m in model.named_modules():
        if isinstance(m, QuantLayer):
            assert m.weight.grad is not None and torch.isfinite(m.weight.grad).all(), name
            assert m.weight.grad.abs().sum() > 0, name
            if cfg.lsq:
                assert m.w_quant.scale.grad is not None and m.w_quant.scale.grad.abs().sum() > 0
                assert m.a_quant.scale.grad is not None and torch.isfinite(m.a_quant.scale.grad).all()
    # one optimizer step changes the quantized output (the model trains)
    before = model.eval()(x).detach()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    assert not torch.equal(model(x), before)


def test_convert_freezes_without_changing_outputs(x: torch.Tensor) -> None:
    for cfg in ("w8a8", "binary_a4", "ternary_a8", QuantConfig(w_bits=5, w_observer="mse")):
        model = quantize_(Mixed().eval(), cfg)
        calibrate(model, [x])
        y = model(x)
        convert_(model)
        assert torch.equal(model(x), y)
        assert all(bool(m.w_quant.frozen) for m in model.modules() if isinstance(m, QuantLayer))


def test_fold_bn_matches_eval_outputs(x: torch.Tensor) -> None:
    model = _trained_bn(Mixed(), x)
    ref = model(x)
    fold_bn_(model)
    assert isinstance(model.bn, FoldedBN) and isinstance(model.block[1], FoldedBN)
    assert model.stem.bias is not None  # created for the bias-free conv
    assert torch.allclose(model(x), ref, atol=1e-5)


def test_fold_bn_falls_back_to_sequential_when_untraceable(x: torch.Tensor) -> None:
    class Untraceable(Mixed):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 1e9:  # data-dependent control flow defeats torch.fx
                return x
            return super().forward(x)

    model = _trained_bn(Untraceable(), x)
    ref = model(x)
    fold_bn_(model)
    assert isinstance(model.block[1], FoldedBN)  # Sequential pair folded
    assert isinstance(model.bn, nn.BatchNorm2d)  # the pair outside a Sequential is left alone
    assert torch.allclose(model(x), ref, atol=1e-5)
    unfolded = quantize_(_trained_bn(Untraceable(), x), "w8a8")
    with pytest.raises(ConfigError, match="already quantized"):
        fold_bn_(unfolded)


def test_account_lenet5_by_hand() -> None:
    model = create("lenet5")
    x = torch.zeros(3, 1, 28, 28)
    f = account(model, x)
    macs = [28 * 28 * 6 * 25, 10 * 10 * 16 * 150, 400 * 120, 120 * 84, 84 * 10]
    assert [r["macs"] for r in f.layers] == macs
    assert f.total["macs"] == sum(macs)
    assert f.total["bops"] == sum(macs) * 32 * 32
    n = sum(p.numel() for p in model.parameters())
    assert f.total["params"] == n and f.total["size_bytes"] == 4 * n and f.total["avg_w_bits"] == 32
    cfg = QuantConfig(w_bits=4, a_bits=8, overrides={"@first": {"w_bits": 8}}, skip=["@last"])
    quantize_(model, cfg)
    calibrate(model, [torch.randn(4, 1, 28, 28)])
    state = copy.deepcopy(model.state_dict())
    q = account(model, x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # no state change
    r0, r1, last = q.layers[0], q.layers[1], q.layers[-1]
    assert (r0["w_bits"], r0["a_bits"], r1["w_bits"], last["w_bits"], last["a_bits"]) == (8, 8, 4, 32, 32)
    assert r1["bops"] == macs[1] * 4 * 8
    # conv2: 2400 weights at 4 bits + 16 scales + 16 biases (4 B each) + activation grid (8 B)
    assert r1["size_bytes"] == 2400 * 4 / 8 + 16 * 4 + 16 * 4 + 8
    assert q.total["params"] == n  # LSQ / quantizer state is not counted as model parameters
    assert q.total["weight_bits"] == 150 * 8 + (2400 + 48000 + 10080) * 4 + 840 * 32
    assert q.total["compression"] > 5
    headers, rows = q.table()
    assert len(rows) == len(q.layers) + 1 and len(headers) == len(rows[0])
