"""ZeroQ distilled data reproduces the BatchNorm running statistics far better than noise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.mixed.zeroq import ZeroQConfig, bn_statistics_loss, distill_data

torch.set_num_threads(1)


def _bn_cnn_with_structured_stats() -> nn.Module:
    """A Conv-BN-ReLU CNN whose running stats come from non-Gaussian, offset 'images'."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 6 * 6, 10),
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    # smooth blobs: strong spatial correlation, per-image offsets; unlike white noise
    base = torch.randn(512, 1, 4, 4, generator=g)
    imgs = nn.functional.interpolate(base, size=(12, 12), mode="bilinear") * 1.5 + 0.3
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: exact data statistics
    with torch.no_grad():
        for i in range(0, 512, 64):
            model(imgs[i : i + 64])
    return model.eval()


def test_distilled_data_matches_bn_statistics_better_than_noise():
    model = _bn_cnn_with_structured_stats()
    cfg = ZeroQConfig(n_samples=64, batch_size=32, iters=200, seed=0)
    x = distill_data(model, (1, 12, 12), cfg, progress=False)
    assert x.shape == (64, 1, 12, 12) and not x.requires_grad
    noise = torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        l_dist = float(bn_statistics_loss(model, x, groups=2))
        l_noise = float(bn_statistics_loss(model, noise, groups=2))
    # stated margin: distilled data at least 20x closer to the BN running statistics than N(0,1) noise
    assert l_dist < 0.05 * l_noise, (l_dist, l_noise)
    # and the model is untouched: no grads, eval mode, same running stats
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_bn_loss_is_exact_and_grouping_is_per_batch():
    g = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(3, eps=0.0)
    model = nn.Sequential(bn)
    mu, sd = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([2.0, 0.5, 1.0])

    def standardized(n: int) -> torch.Tensor:  # per-channel batch mean mu, std sd exactly
        z = torch.randn(n, 3, 5, 5, generator=g)
        z = (z - z.mean(dim=(0, 2, 3), keepdim=True)) / z.std(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return z * sd[None, :, None, None] + mu[None, :, None, None]

    bn.running_mean.copy_(mu)
    bn.running_var.copy_(sd**2)
    h1, h2 = standardized(8), standardized(8)
    x = torch.cat([h1, h2])
    assert float(bn_statistics_loss(model, x, groups=1)) == pytest.approx(0.0, abs=1e-6)
    assert float(bn_statistics_loss(model, x, groups=2)) == pytest.approx(0.0, abs=1e-6)
    # halves shifted by ±1: pooled mean still matches but the pooled std is sqrt(sd² + 1) ...
    y = torch.cat([h1 + 1, h2 - 1])
    pooled = float(((torch.sqrt(sd**2 + 1) - sd) ** 2).sum())
    assert float(bn_statistics_loss(model, y, groups=1)) == pytest.approx(pooled, rel=1e-4)
    # ... while each group on its own has the right std and a mean off by 1 in each of 3 channels
    assert float(bn_statistics_loss(model, y, groups=2)) == pytest.approx(3.0, rel=1e-4)
    # the input prior adds ||mean||² + ||std − 1||² of the input itself
    prior = float((mu**2).sum() + ((sd - 1) ** 2).sum())
    assert float(bn_statistics_loss(model, x, input_prior=True)) == pytest.approx(prior, rel=1e-4)
    with pytest.raises(ConfigError, match="divide"):
        bn_statistics_loss(model, x, groups=3)


def test_distill_is_seeded_and_needs_batchnorm():
    model = _bn_cnn_with_structured_stats()
    cfg = ZeroQConfig(n_samples=8, batch_size=8, iters=5, seed=3)
    a = distill_data(model, (1, 12, 12), cfg, progress=False)
    b = distill_data(model, (1, 12, 12), cfg, progress=False)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="BatchNorm"):
        distill_data(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (4,), cfg, progress=False)
    with pytest.raises(ConfigError, match="lr"):
        ZeroQConfig(lr=0)
    assert ZeroQConfig.from_json(cfg.to_json()) == cfg
