"""Hardware-aware (HWA) training for analog layers.

* **Weight-noise injection per batch** (``HWAConfig.noise``): ``additive`` (std ``noise_std`` times
  the group's ``w_max``), ``multiplicative`` (std ``noise_std`` relative to each weight) or
  ``device``: every batch the layer's weights are programmed, drifted to a time drawn
  log-uniformly from ``[t_min, t_max]``, read once and drift-compensated with the layer's own
  device and mapping models; the forward uses these weights and the gradient goes straight
  through to the clean weights (as aihwkit's ``WeightModifierType.PCM_NOISE``, but with the full
  device model).
* **Weight clipping** after every optimizer step (:func:`clip_hook`, a ``step_hooks`` entry of
  ``cimkit.train.fit``): to ``clip_sigma`` standard deviations of each layer's weights (aihwkit's
  ``WeightClipType.LAYER_GAUSSIAN``) or to ``±clip_value``.
* **Learned DAC/ADC ranges**: set the mapping's ``dac_range_mode``/``adc_range_mode`` to
  ``learned``; the ranges are trained with the LSQ straight-through estimator.
* **Noise-aware knowledge distillation** (W. Zhou et al., DATE 2025): the noisy analog student is
  trained against the fp32 teacher with ``cimkit.train.fit(..., teacher=fp32_model)`` and
  ``TrainConfig.kd_alpha > 0`` (see :func:`hwa_fit`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError

__all__ = ["ClipKind", "HWAConfig", "NoiseKind", "clip_hook", "clip_weights", "hwa_fit", "set_hwa"]

log = logging.getLogger(__name__)


class NoiseKind(str, Enum):
    """Weight noise injected per training batch."""

    NONE = "none"
    ADDITIVE = "additive"
    MULTIPLICATIVE = "multiplicative"
    DEVICE = "device"


class ClipKind(str, Enum):
    """Weight clipping after each optimizer step."""

    NONE = "none"
    GAUSSIAN = "gaussian"
    FIXED = "fixed"


@dataclass
class HWAConfig(Config):
    """Hardware-aware training settings (see the module docstring)."""

    noise: NoiseKind = NoiseKind.DEVICE
    noise_std: float = 0.05
    device_noise_scale: float = 1.0
    t_min: float = 3600.0
    t_max: float = 31536000.0
    clip: ClipKind = ClipKind.GAUSSIAN
    clip_sigma: float = 2.5
    clip_value: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("noise_std", self.noise_std, 0.0)
        check_range("device_noise_scale", self.device_noise_scale, 0.0)
        check_range("t_min", self.t_min, 0.0)
        check_range("t_max", self.t_max, self.t_min)
        check_range("clip_sigma", self.clip_sigma, 0.0, lo_open=True)
        check_range("clip_value", self.clip_value, 0.0, lo_open=True)

    def sample_time(self, generator: torch.Generator | None) -> float:
        """A drift time for one batch: log-uniform in ``[t_min, t_max]`` (``t_min`` if they are equal)."""
        if self.t_max <= self.t_min:
            return self.t_min
        lo, hi = math.log(max(self.t_min, 1e-3)), math.log(self.t_max)
        u = float(torch.rand((), generator=generator).item())
        return math.exp(lo + u * (hi - lo))


def _layers(model: nn.Module) -> Iterable[tuple[str, Any]]:
    from cimkit.analog.layers import AnalogLayer

    return ((n, m) for n, m in model.named_modules() if isinstance(m, AnalogLayer))


def set_hwa(model: nn.Module, cfg: HWAConfig | None) -> nn.Module:
    """Enable (or with ``None`` disable) per-batch weight-noise injection in every analog layer.

    Each layer gets its own noise generator seeded from ``cfg.seed`` and the layer's name.
    """
    from cimkit.utils import derive_seed

    n = 0
    for name, layer in _layers(model):
        layer.set_hwa(cfg, derive_seed(cfg.seed, "hwa", name) if cfg is not None else 0)
        n += 1
    if n == 0 and cfg is not None:
        raise ConfigError("set_hwa: the model has no analog layers; call cimkit.analog.convert first")
    return model


@torch.no_grad()
def clip_weights(model: nn.Module, cfg: HWAConfig) -> None:
    """Clip every analog layer's weights in place as ``cfg.clip`` says."""
    if cfg.clip == ClipKind.NONE:
        return
    for _, layer in _layers(model):
        w = layer.weight
        if cfg.clip == ClipKind.GAUSSIAN:
            bound = float(w.std()) * cfg.clip_sigma
            if bound > 0:
                w.clamp_(-bound, bound)
        else:
            w.clamp_(-cfg.clip_value, cfg.clip_value)


def clip_hook(cfg: HWAConfig) -> Callable[[nn.Module], None]:
    """A ``step_hooks`` callable for ``cimkit.train.fit`` that clips analog weights after each step."""

    def hook(model: nn.Module) -> None:
        clip_weights(model, cfg)

    return hook


def hwa_fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    train_cfg: Any,
    hwa: HWAConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    **fit_kwargs: Any,
) -> Any:
    """Hardware-aware training of a converted model with ``cimkit.train.fit``.

    Enables noise injection (:func:`set_hwa`), clips weights after every step, and distils from
    ``teacher`` (the fp32 model) when ``train_cfg.kd_alpha > 0``. Returns ``fit``'s result.
    """
    from cimkit.train import fit

    hwa = hwa or HWAConfig()
    set_hwa(model, hwa)
    hooks = (*tuple(fit_kwargs.pop("step_hooks", ())), clip_hook(hwa))
    return fit(model, train_loader, train_cfg, teacher=teacher, step_hooks=hooks, **fit_kwargs)
