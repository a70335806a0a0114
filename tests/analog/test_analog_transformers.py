"""Transformers on crossbars: every projection and MLP layer on tiles (ideal device = digital), the
attention products digital, per-channel training noise and per-channel clipping (AFM's recipe)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimkit import analog
from cimkit.analog import HWAConfig
from cimkit.analog.hwa import ChannelNoise
from cimkit.models import create


@pytest.mark.parametrize(("name", "spec", "x"), [
    ("char_gpt", {"vocab_size": 65, "block_size": 32, "size": "small"}, lambda g: torch.randint(0, 65, (3, 32), generator=g)),
    ("vit_tiny", {"in_channels": 1, "num_classes": 10, "input_size": (28, 28)}, lambda g: torch.randn(3, 1, 28, 28, generator=g)),
])  # fmt: skip
def test_transformer_on_ideal_crossbars_equals_digital(name: str, spec: dict, x, gen: torch.Generator) -> None:
    torch.manual_seed(0)
    m = create(name, **spec).eval().double()
    xb = x(gen)
    xb = xb.double() if xb.is_floating_point() else xb
    a = analog.convert(m, "ideal", "ideal")
    names = [n for n, _ in analog.analog_layers(a)]
    linears = [n for n, mod in m.named_modules() if isinstance(mod, (nn.Linear, nn.Conv2d))]
    assert names == linears  # every projection, MLP layer, head (and ViT patch embedding) on tiles
    assert all(not isinstance(mod, analog.AnalogLayer) for n, mod in a.named_modules() if n.endswith(".attn"))
    with torch.no_grad():
        assert torch.allclose(a(xb), m(xb), atol=1e-10, rtol=1e-10)


def _noisy_layer(n_in: int, scaling: str) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(n_in, 6)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(6, n_in, generator=g) * torch.linspace(0.1, 1.0, 6)[:, None])  # rows differ
    return analog.convert(nn.Sequential(lin), analog.mapping_preset("ideal", tile_rows=64, scaling=scaling), "ideal")


@pytest.mark.parametrize("scaling", ["column", "layer"])
def test_channel_noise_is_relative_to_each_channels_abs_max(scaling: str) -> None:
    a = _noisy_layer(256, scaling)  # 4 row tiles of 64
    layer = a[0]
    layer.hwa_generator = torch.Generator().manual_seed(1)
    aa, ws = layer._weights_from_parameters()  # clean (S, T, R, N), (T, N)
    draws = torch.stack([ChannelNoise(0.03)(layer, aa, None, aa[0]) - aa for _ in range(40)])  # (K, S, T, R, N)
    w_noise = draws * ws.unsqueeze(1)  # in weight units
    std = w_noise.std(dim=(0, 1, 2, 3))  # (N,)
    ch_max = layer.weight.detach().abs().amax(dim=1)  # (N,)
    # 40 x 256 samples per channel: the std's relative standard error is ~1/sqrt(2·10240) < 1 %
    assert torch.allclose(std, 0.03 * ch_max, rtol=0.04)
    per_tile = w_noise.std(dim=(0, 1, 3))  # (T, N): the same absolute noise on every tile
    assert torch.allclose(per_tile, (0.03 * ch_max).expand_as(per_tile), rtol=0.1)


def test_gaussian_channel_clipping_bounds_each_row() -> None:
    a = _noisy_layer(64, "column")
    w = a[0].weight
    with torch.no_grad():
        w[0, 0] = 50.0  # an outlier in row 0
    before = w.detach().clone()
    analog.clip_weights(a, HWAConfig(clip="gaussian_channel", clip_sigma=2.5))
    bound = 2.5 * before.std(dim=1, keepdim=True)  # (N, 1); clip_weights' faster std agrees to float rounding
    torch.testing.assert_close(w.detach(), torch.maximum(torch.minimum(before, bound), -bound), rtol=1e-6, atol=0)
    assert int((w.detach() != before).sum()) >= 1
    wd = w.detach()
    assert float(wd[0, 0]) < 50.0 and float(wd[5].abs().max()) > float(wd[0, 1:].abs().max())  # per row
    w.requires_grad_(False)  # a frozen weight is never clipped
    with torch.no_grad():
        w[1, 1] = 99.0
    analog.clip_weights(a, HWAConfig(clip="gaussian_channel", clip_sigma=2.5))
    assert float(w.detach()[1, 1]) == 99.0


def test_gaussian_channel_clipping_in_place_equals_the_out_of_place_form() -> None:
    from cimkit.analog.hwa import _std

    torch.manual_seed(3)
    a = _noisy_layer(64, "column")
    w = a[0].weight
    with torch.no_grad():
        w.mul_(torch.rand_like(w) * 3.0)
    before = w.detach().clone()
    bound = (_std(before) * 2.5).clamp_min(1e-30)
    analog.clip_weights(a, HWAConfig(clip="gaussian_channel", clip_sigma=2.5))  # contiguous: in place
    assert torch.equal(w.detach(), torch.maximum(torch.minimum(before, bound), -bound))
    assert int((w.detach() != before).sum()) >= 1
