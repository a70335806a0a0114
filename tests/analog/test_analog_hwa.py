"""Hardware-aware training: it runs, clips, learns ranges, distils, and improves robustness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimkit import analog
from cimkit.analog import HWAConfig, mapping_preset
from cimkit.data import TensorLoader
from cimkit.errors import ConfigError
from cimkit.train import TrainConfig, evaluate, fit


def _task(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 16, generator=g)
    x = torch.randn(3000, 16, generator=g)
    xt = torch.randn(2000, 16, generator=g)
    return x, (x @ w.T).argmax(1), xt, (xt @ w.T).argmax(1)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    data = _task()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    fit(net, TensorLoader(data[0], data[1], 64, shuffle=True), TrainConfig(epochs=15, lr=3e-3), progress=False)
    return net, data


def _robust(m: nn.Module, xt: torch.Tensor, yt: torch.Tensor, seeds: int = 8) -> tuple[float, float]:
    m.eval()
    acc = loss = 0.0
    for s in range(seeds):
        analog.program(m, s)
        analog.drift(m, 1.0)
        e = evaluate(m, TensorLoader(xt, yt, 1000))
        acc += e["accuracy"] / seeds
        loss += e["loss"] / seeds
    return acc, loss


def test_device_noise_hwa_improves_robustness(trained: tuple[nn.Module, tuple[torch.Tensor, ...]]) -> None:
    net, (x, y, xt, yt) = trained
    assert evaluate(net, TensorLoader(xt, yt, 1000))["accuracy"] > 0.95
    device = analog.device_preset("ideal", prog_coeffs=(4.0,))  # 16 % of g_max programming noise
    mapping = mapping_preset("ideal", compensation="none")
    res = {}
    for mode in ("none", "device"):
        m = analog.convert(net, mapping, device)
        cfg = HWAConfig(noise=mode, clip="none", t_min=1.0, t_max=1.0)
        analog.hwa_fit(m, TensorLoader(x, y, 64, shuffle=True), TrainConfig(epochs=10, lr=3e-3), cfg, progress=False)
        res[mode] = _robust(m, xt, yt)
    # same fine-tuning budget; with the device's own noise injected the analog model is more robust
    (acc_plain, loss_plain), (acc_hwa, loss_hwa) = res["none"], res["device"]
    assert loss_hwa < 0.95 * loss_plain
    assert acc_hwa > acc_plain


def test_noise_kinds_inject_per_batch_noise(trained: tuple[nn.Module, tuple[torch.Tensor, ...]]) -> None:
    net, (x, *_rest) = trained
    xb = x[:32]
    for kind in ("additive", "multiplicative", "device"):
        m = analog.convert(net, "ideal", "pcm").train()
        analog.set_hwa(m, HWAConfig(noise=kind, noise_std=0.1))
        a, b = m(xb), m(xb)
        assert not torch.allclose(a, b)  # fresh noise each batch
        a.sum().backward()
        assert m[0].weight.grad is not None and float(m[0].weight.grad.abs().sum()) > 0
        m.eval()
        with torch.no_grad():
            assert torch.allclose(m(xb), net(xb), atol=1e-5)  # no noise outside training (unprogrammed)
    with pytest.raises(ConfigError):
        analog.set_hwa(nn.Sequential(nn.Linear(2, 2)), HWAConfig())


def test_clip_hook_clips_weights() -> None:
    torch.manual_seed(1)
    m = analog.convert(nn.Sequential(nn.Linear(50, 40)), "ideal", "ideal")
    with torch.no_grad():
        m[0].weight[0, 0] = 10.0
    cfg = HWAConfig(clip="gaussian", clip_sigma=2.0)
    std = float(m[0].weight.detach().std())
    analog.clip_hook(cfg)(m)
    assert float(m[0].weight.detach().abs().max()) == pytest.approx(2.0 * std, rel=1e-5)
    analog.clip_weights(m, HWAConfig(clip="fixed", clip_value=0.01))
    assert float(m[0].weight.detach().abs().max()) <= 0.01 + 1e-7


def test_learned_ranges_train_and_kd_from_teacher(trained: tuple[nn.Module, tuple[torch.Tensor, ...]]) -> None:
    net, (x, y, xt, yt) = trained
    m = analog.convert(net, mapping_preset("learned", out_noise=0.02, dac_bits=6, adc_bits=6), "pcm")
    analog.calibrate(m, [x[:256]])
    r_in0, r_out0 = float(m[0].input_range.detach()), float(m[2].output_range.detach())
    assert m[0].input_range.requires_grad and m[2].output_range.requires_grad
    res = analog.hwa_fit(
        m,
        TensorLoader(x, y, 64, shuffle=True),
        TrainConfig(epochs=2, lr=3e-3, kd_alpha=0.7, kd_temperature=2.0),
        HWAConfig(),
        teacher=net,
        progress=False,
    )
    assert len(res.history) == 2
    assert float(m[0].input_range.detach()) != r_in0 and float(m[2].output_range.detach()) != r_out0  # learned
    analog.set_hwa(m, None)
    analog.program(m, 0)
    analog.drift(m, 3600.0)
    assert evaluate(m, TensorLoader(xt, yt, 1000))["accuracy"] > 0.9


@pytest.mark.parametrize("compensation", ["global", "column"])  # global: the one-slice shortcut
def test_device_noise_read_is_compensated(compensation: str) -> None:
    # the noisy read keeps the clean weights' L1 norm: in all (global) or per column (column)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(300, 40))  # two 256-row tiles
    m = analog.convert(net, mapping_preset("standard", compensation=compensation), "pcm").train()
    analog.set_hwa(m, HWAConfig(seed=1))
    layer = m[0]
    with torch.no_grad():
        clean = layer.geometry.to_tiles(layer.weight)
        u = clean / layer.weight_scale(clean).unsqueeze(1)  # (T, R, N) in [-1, 1]
        a_clean = u.unsqueeze(0)  # (1, T, R, N)
        a = layer.weight_noise(layer, a_clean, None, u)
    assert a.shape == a_clean.shape and not torch.allclose(a, a_clean, atol=1e-3)  # noise was read
    dims = (0, 1, 2) if compensation == "column" else (0, 1, 2, 3)
    ref, cur = a_clean.abs().sum(dims), a.abs().sum(dims)
    assert torch.allclose(cur, ref, rtol=1e-4)
    assert float(torch.corrcoef(torch.stack([a.flatten(), a_clean.flatten()]))[0, 1]) > 0.9


@pytest.mark.parametrize("shape", [(7, 2), (64, 300), (3, 4097)])
def test_clip_std_matches_torch_std(shape: tuple[int, int]) -> None:
    from cimkit.analog.hwa import _std

    rows = torch.randn(shape, generator=torch.Generator().manual_seed(shape[1])) * 3.0 + 1.5
    torch.testing.assert_close(_std(rows), rows.std(dim=1, keepdim=True), rtol=2e-6, atol=0)


def test_clipping_skips_layers_without_spread() -> None:
    # per channel, fan-in 1: a row has no std to clip against; per layer, a single weight
    for kind, layer in (("gaussian_channel", nn.Linear(1, 3)), ("gaussian", nn.Linear(1, 1))):
        net = analog.convert(nn.Sequential(layer), "standard", "pcm")
        before = net[0].weight.detach().clone()
        analog.clip_weights(net, HWAConfig(clip=kind, clip_sigma=0.1))
        assert torch.equal(net[0].weight.detach(), before) and bool(torch.isfinite(before).all())
