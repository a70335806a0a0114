"""Hardware-aware (HWA) training for analog layers.

* **Weight noise per batch**, a strategy object each analog layer holds (``layer.weight_noise``,
  installed by :func:`set_hwa` from :class:`~cimkit.analog.config.HWAConfig`): ``additive`` (std
  ``noise_std`` times the group's ``w_max``), ``additive_channel`` (std ``noise_std`` times each
  output channel's abs-max weight: aihwkit-lightning's ``add_gauss_channel``), ``multiplicative`` (std ``noise_std`` relative to each
  weight) or ``device``: every batch the layer's weights are programmed, drifted to a time drawn
  log-uniformly from ``[t_min, t_max]``, read once and drift-compensated with the layer's own device
  and mapping models; the forward uses these weights and the gradient goes straight through to the
  clean weights (as aihwkit's ``WeightModifierType.PCM_NOISE``, but with the full device model).
  Any callable ``noise(layer, a_clean, codes, u) -> a_noisy`` can be installed instead
  (:func:`set_weight_noise`), so users can plug in their own noise models.
* **Weight clipping** after every optimizer step (:func:`clip_hook`, a ``step_hooks`` entry of
  ``cimkit.train.fit``): to ``clip_sigma`` standard deviations of each layer's weights (aihwkit's
  ``WeightClipType.LAYER_GAUSSIAN``), of each output channel's (aihwkit-lightning's
  ``gaussian_channel``) or to ``±clip_value``.
* **Learned DAC/ADC ranges**: set the mapping's ``dac_range_mode``/``adc_range_mode`` to
  ``learned``; the ranges are trained with the LSQ straight-through estimator.
* **Noise-aware knowledge distillation** (W. Zhou et al., DATE 2025): the noisy analog student is
  trained against the fp32 teacher with ``cimkit.train.fit(..., teacher=fp32_model)`` and
  ``TrainConfig.kd_alpha > 0`` (see :func:`hwa_fit`).

Shapes: ``A`` (S, T, R, N) normalised analog weights, device codes (S, D, T, R, N), ``u`` (T, R, N).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.analog.cells import a_from_g, compensation_factor, readout
from cimkit.analog.chip import ir_factors
from cimkit.analog.config import ClipKind, HWAConfig, NoiseKind
from cimkit.analog.devices import sample_read
from cimkit.analog.layers import AnalogLayer, analog_layers
from cimkit.analog.mapping import Compensation, WeightPair
from cimkit.analog.periphery import gaussian_noise
from cimkit.errors import ConfigError
from cimkit.train import fit
from cimkit.utils import derive_seed

__all__ = [
    "AdditiveNoise", "ChannelNoise", "DeviceNoise", "MultiplicativeNoise", "WeightNoise", "clip_hook", "clip_weights", "hwa_fit",
    "set_hwa", "set_weight_noise", "weight_noise_for",
]  # fmt: skip

log = logging.getLogger(__name__)

WeightNoise = Callable[[AnalogLayer, Tensor, "Tensor | None", Tensor], Tensor]


def _normal(layer: AnalogLayer, a: Tensor) -> Tensor:
    """Standard-normal noise like ``a`` from the layer's HWA generator (the shared noise table
    unless the mapping sets ``fast_noise = false``); a view: not to be modified in place."""
    return gaussian_noise(a.shape, layer.hwa_generator, device=a.device, dtype=a.dtype, fast=layer.mapping.fast_noise)


class AdditiveNoise:
    """``A + std · N(0, 1)`` (in units of the group's ``w_max``)."""

    def __init__(self, std: float) -> None:
        self.std = float(std)

    def __call__(self, layer: AnalogLayer, a: Tensor, v: Tensor | None, u: Tensor) -> Tensor:
        return a + self.std * _normal(layer, a)


class ChannelNoise:
    """Additive Gaussian noise with std ``std`` times each output channel's abs-max weight
    (aihwkit-lightning's ``add_gauss_channel``; Büchel et al. 2025 train with ``std = 0.03``).

    In normalised units a weight ``w = u · w_scale[t, n]`` of output channel ``n`` gets noise of
    std ``std · max_{t,r} |w[t, r, n]| / w_scale[t, n]``: the same absolute noise on every tile of
    the channel, whatever the mapping's weight scaling. For one tile with per-column scaling this
    is ``std`` in units of ``w_max``, as :class:`AdditiveNoise`.
    """

    def __init__(self, std: float) -> None:
        self.std = float(std)

    def fused_std(self) -> float | None:
        """The std for the training plan's fused weight kernel (``cimkit.native.train_weights``, the
        same operations as :meth:`__call__`); None for a subclass that changes the noise."""
        return self.std if type(self).__call__ is ChannelNoise.__call__ else None

    def __call__(self, layer: AnalogLayer, a: Tensor, v: Tensor | None, u: Tensor) -> Tensor:
        wt = layer.geometry.to_tiles(layer.source_weight().detach())  # (T, R, N)
        w_scale = layer.weight_scale(wt)  # (T, N)
        ch_max = wt.abs().amax(dim=(0, 1))  # (N,)
        sigma = (self.std * ch_max / w_scale).to(a.dtype)  # (T, N)
        return torch.addcmul(a, _normal(layer, a), sigma.unsqueeze(1))  # (S, T, R, N)


class MultiplicativeNoise:
    """``A · (1 + std · N(0, 1))``."""

    def __init__(self, std: float) -> None:
        self.std = float(std)

    def __call__(self, layer: AnalogLayer, a: Tensor, v: Tensor | None, u: Tensor) -> Tensor:
        return a * (1.0 + self.std * _normal(layer, a))


class DeviceNoise:
    """Program, drift to a random time, read and compensate with the layer's own device model."""

    def __init__(self, cfg: HWAConfig) -> None:
        self.cfg = cfg

    def __call__(self, layer: AnalogLayer, a_clean: Tensor, v: Tensor | None, u: Tensor) -> Tensor:
        cfg, gen, m = self.cfg, layer.hwa_generator, layer.mapping
        dev = layer.device_cfg
        if cfg.device_noise_scale != 1.0:
            k = cfg.device_noise_scale
            dev = dev.replace(prog_noise_scale=dev.prog_noise_scale * k, read_noise_scale=dev.read_noise_scale * k,
                              read_noise_std=dev.read_noise_std * k)  # fmt: skip
        ws = layer._hwa_ws
        if v is not None:
            g_t = v.clone()
        elif m.pair == WeightPair.DIFFERENTIAL and m.slice_bits == 0:
            g_t = ws.get("codes")  # codes straight into a reused buffer
            if g_t is None or g_t.shape[2:] != u.shape:
                g_t = ws["codes"] = torch.empty((1, 2, *u.shape), device=u.device, dtype=u.dtype)
            torch.clamp(u, min=0.0, out=g_t[0, 0])
            torch.clamp(u, max=0.0, out=g_t[0, 1]).neg_()
        else:
            g_t = layer.codes(u)
        g_t.mul_(dev.g_range)  # target conductances (S, D, T, R, N)
        if dev.g_min != 0.0:
            g_t.add_(dev.g_min)
        g = sample_read(g_t, dev, cfg.sample_time(gen), gen, fast=m.fast_noise, workspace=ws)
        if dev.r_wire > 0:
            g = g * ir_factors(g, layer.geometry, dev)
        if m.compensation == Compensation.GLOBAL and m.pair == WeightPair.DIFFERENTIAL and g.shape[0] == 1:
            # one slice, global compensation: A = (G+ - G-) / g_range times sum|A_clean| / sum|A|,
            # in which 1 / g_range cancels (all-zero weights read as zero whatever the factor)
            d = torch.sub(g[:, 0], g[:, 1])  # (1, T, R, N)
            ref = torch.linalg.vector_norm(a_clean, 1)
            return d.mul_(ref / torch.linalg.vector_norm(d, 1).clamp_(min=1e-12))
        a = a_from_g(g, m.pair, dev)
        alpha = compensation_factor(readout(a_clean, layer.slice_coef), readout(a, layer.slice_coef),
                                    m.compensation, layer.geometry.n_out)  # fmt: skip
        return a.mul_(alpha) if alpha is not None else a


def weight_noise_for(cfg: HWAConfig | None) -> WeightNoise | None:
    """The weight-noise strategy of ``cfg`` (None for no noise)."""
    if cfg is None or cfg.noise == NoiseKind.NONE:
        return None
    if cfg.noise == NoiseKind.ADDITIVE:
        return AdditiveNoise(cfg.noise_std)
    if cfg.noise == NoiseKind.ADDITIVE_CHANNEL:
        return ChannelNoise(cfg.noise_std)
    if cfg.noise == NoiseKind.MULTIPLICATIVE:
        return MultiplicativeNoise(cfg.noise_std)
    return DeviceNoise(cfg)


def set_weight_noise(model: nn.Module, noise: WeightNoise | None, seed: int = 0) -> nn.Module:
    """Install ``noise`` (a strategy, any callable ``(layer, a, codes, u) -> a_noisy``, or None) in
    every analog layer, each with its own generator seeded from ``seed`` and the layer's name."""
    layers = list(analog_layers(model))
    if not layers and noise is not None:
        raise ConfigError("set_hwa: the model has no analog layers; call cimkit.analog.convert first")
    for name, layer in layers:
        layer.weight_noise = noise
        layer.hwa_generator = (
            torch.Generator(device=layer.slice_coef.device).manual_seed(derive_seed(seed, "hwa", name))
            if noise is not None else None
        )  # fmt: skip
    return model


def set_hwa(model: nn.Module, cfg: HWAConfig | None) -> nn.Module:
    """Enable (or with ``None`` disable) per-batch weight-noise injection in every analog layer."""
    return set_weight_noise(model, weight_noise_for(cfg), cfg.seed if cfg is not None else 0)


def _std(rows: Tensor) -> Tensor:
    """Unbiased standard deviation of each row (R, n) -> (R, 1): ``rows.std(dim=1, keepdim=True)``
    to float rounding, as a mean and an L2 norm, which on CPUs is several times faster than
    ``torch.std``."""
    n = rows.shape[1]
    centred = rows - rows.mean(dim=1, keepdim=True)
    return torch.linalg.vector_norm(centred, dim=1, keepdim=True) * (1.0 / (n - 1) ** 0.5)


@torch.no_grad()
def clip_weights(model: nn.Module, cfg: HWAConfig) -> None:
    """Clip every analog layer's weights in place as ``cfg.clip`` says."""
    if cfg.clip == ClipKind.NONE:
        return
    for _, layer in analog_layers(model):
        w = layer.weight
        if not w.requires_grad:  # a frozen weight (e.g. a LoRA base) is not trained, so not clipped
            continue
        if cfg.clip == ClipKind.GAUSSIAN:
            if w.numel() < 2:
                continue  # no spread to clip against
            bound = float(_std(w.reshape(1, -1))) * cfg.clip_sigma
            if bound > 0:
                w.clamp_(-bound, bound)
        elif cfg.clip == ClipKind.GAUSSIAN_CHANNEL:
            rows = w.reshape(w.shape[0], -1)  # (C_out, fan_in)
            if rows.shape[1] < 2:
                continue
            bound = (_std(rows) * cfg.clip_sigma).clamp_min(1e-30)  # (C_out, 1)
            if w.is_contiguous():  # rows is a view of w: clip in place (bound > 0, so the same values)
                rows.clamp_(-bound, bound)
            else:
                w.copy_(torch.maximum(torch.minimum(rows, bound), -bound).reshape(w.shape))
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
    hwa = hwa or HWAConfig()
    set_hwa(model, hwa)
    hooks = (*tuple(fit_kwargs.pop("step_hooks", ())), clip_hook(hwa))
    return fit(model, train_loader, train_cfg, teacher=teacher, step_hooks=hooks, **fit_kwargs)
