"""ZeroQ distilled data (Cai et al., "ZeroQ: A Novel Zero Shot Quantization Framework", CVPR 2020).

Inputs are optimized so the batch statistics at every BatchNorm layer match the layer's running
statistics (paper eq. 2):

    min_x  Σ_i ||μ̃_i(x) − μ_i||²₂ + ||σ̃_i(x) − σ_i||²₂

where μ̃_i, σ̃_i are the per-channel mean and standard deviation of BN layer i's *input* over the
batch (and the spatial positions) and μ_i, σ_i = sqrt(running_var + eps) its running statistics.
As in the reference implementation, the data start from N(0, 1), Adam with lr 0.5 for 500 steps,
and (``input_prior``) the same loss on the input itself pulls it toward mean 0 / std 1 (cimkit's
data sets are normalized that way). Each group of ``batch_size`` samples is matched on its own
statistics; all groups go through the model in one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.mixed._common import log
from cimkit.utils import progress as progress_bar

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class ZeroQConfig(Config):
    """Distilled-data settings (defaults from the ZeroQ reference code)."""

    n_samples: int = 256
    batch_size: int = 32
    iters: int = 500
    lr: float = 0.5
    input_prior: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("n_samples", self.n_samples, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("iters", self.iters, 0)
        check_range("lr", self.lr, 0.0, lo_open=True)


def _bn_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None
    ]


def _group_stats(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group, per-channel mean and std of ``x`` (N, C, ...) with N = groups·b."""
    c = x.shape[1]
    xg = x.reshape(groups, x.shape[0] // groups, c, -1).transpose(1, 2).reshape(groups, c, -1)  # (G, C, b·S)
    mean = xg.mean(dim=2)  # (G, C)
    std = torch.sqrt(xg.var(dim=2, unbiased=False) + 1e-8)  # (G, C)
    return mean, std


def bn_statistics_loss(
    model: nn.Module, x: torch.Tensor, *, groups: int = 1, input_prior: bool = False
) -> torch.Tensor:
    """ZeroQ's loss Σ_i ||μ̃_i − μ_i||² + ||σ̃_i − σ_i||², averaged over the ``groups`` of ``x``.

    Used for the optimization and as the test metric ("how well does x match the BN statistics").
    ``groups`` must divide the batch; each group is scored on its own batch statistics.
    """
    bns = _bn_layers(model)
    if not bns:
        raise ConfigError("ZeroQ needs a model with BatchNorm layers (running statistics to match)")
    if x.shape[0] % groups:
        raise ConfigError(f"groups={groups} does not divide the batch of {x.shape[0]}")
    terms: list[torch.Tensor] = []

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        mean, std = _group_stats(inp[0], groups)  # (G, C)
        rm = mod.running_mean.detach()
        rs = torch.sqrt(mod.running_var.detach() + mod.eps)
        terms.append(((mean - rm) ** 2).sum(dim=1) + ((std - rs) ** 2).sum(dim=1))  # (G,)

    handles = [m.register_forward_pre_hook(hook) for _, m in bns]
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    loss = torch.stack(terms).sum(dim=0)  # (G,)
    if input_prior:
        mean, std = _group_stats(x, groups)  # (G, C_in)
        loss = loss + (mean**2).sum(dim=1) + ((std - 1) ** 2).sum(dim=1)
    return loss.mean()


def distill_data(
    model: nn.Module,
    input_shape: tuple[int, ...],
    cfg: ZeroQConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """ZeroQ distilled inputs ``(cfg.n_samples, *input_shape)`` for a model with BatchNorm layers.

    ``input_shape`` is one sample's shape, e.g. ``(1, 28, 28)``. The model is not changed (its
    parameters get no gradients; BN stays in eval mode). Use the result for PTQ calibration
    (``calibrate(model, batches)``) or as ``data`` for :func:`cimkit.mixed.hessian_trace`.
    """
    cfg = cfg or ZeroQConfig()
    if not _bn_layers(model):
        raise ConfigError("ZeroQ needs a model with BatchNorm layers (running statistics to match)")
    n = cfg.n_samples
    b = min(cfg.batch_size, n)
    n_groups = -(-n // b)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn((n_groups * b, *input_shape), generator=gen).to(device)  # (G·b, C, H, W)
    x.requires_grad_(True)
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    # ZeroQ's reference code decays lr on plateaus; a cosine decay gives the same tail without state
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.iters, 1))
    first = last = float("nan")
    try:
        bar = progress_bar(range(cfg.iters), desc="zeroq", enabled=progress, unit="it")
        for it in bar:
            opt.zero_grad(set_to_none=True)
            loss = bn_statistics_loss(model, x, groups=n_groups, input_prior=cfg.input_prior)
            loss.backward()
            opt.step()
            sched.step()
            last = float(loss.detach())
            if it == 0:
                first = last
            bar.set(loss=last)
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    log.info("zeroq: %d samples, BN-statistics loss %.4g -> %.4g in %d steps", n, first, last, cfg.iters)
    return x.detach()[:n]
