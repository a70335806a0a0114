"""Configs of the analog concern: the ``analog`` transform and hardware-aware training.

* :class:`AnalogConfig`: what ``cimkit.apply_(model, AnalogConfig(...))`` / :func:`cimkit.analog.convert_`
  maps onto crossbars: a mapping and a device (preset names or configs, with field overrides), a
  per-layer rule table (``overrides``: layer-name pattern -> mapping fields, or ``device`` -> a
  preset name), the layers left digital (``skip``), and optional hardware-aware training noise.
* :class:`HWAConfig` with :class:`NoiseKind` and :class:`ClipKind` (see :mod:`cimkit.analog.hwa`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from cimkit.analog.devices import DEVICES, DeviceConfig
from cimkit.analog.mapping import MAPPINGS, MappingConfig
from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.nn.walk import LayerRef, Rules

__all__ = ["AnalogConfig", "ClipKind", "HWAConfig", "NoiseKind", "resolve_device", "resolve_mapping"]


class NoiseKind(str, Enum):
    """Weight noise injected per training batch."""

    NONE = "none"
    ADDITIVE = "additive"
    ADDITIVE_CHANNEL = "additive_channel"  # aihwkit-lightning's add_gauss_channel
    MULTIPLICATIVE = "multiplicative"
    DEVICE = "device"


class ClipKind(str, Enum):
    """Weight clipping after each optimizer step."""

    NONE = "none"
    GAUSSIAN = "gaussian"
    GAUSSIAN_CHANNEL = "gaussian_channel"  # aihwkit-lightning's clip_type gaussian_channel
    FIXED = "fixed"


@dataclass
class HWAConfig(Config):
    """Hardware-aware training settings (see :mod:`cimkit.analog.hwa`).

    ``noise``/``noise_std``: the weight noise injected per batch (``noise_std`` for additive, in
    units of the group's ``w_max``; for ``additive_channel``, relative to each output channel's
    abs-max weight, as aihwkit-lightning's ``add_gauss_channel``; for multiplicative, relative to
    each weight); ``device_noise_scale`` scales the device model's programming and read noise for
    ``device`` noise, drawn at a time log-uniform in ``[t_min, t_max]`` s. ``clip``: weights clipped
    after every step to ``clip_sigma`` standard deviations of the layer (``gaussian``) or of each
    output channel (``gaussian_channel``), or to ``±clip_value`` (``fixed``); weights that are not
    trained (``requires_grad`` false, e.g. a frozen LoRA base) are never clipped.

    Analog Foundation Models (Büchel et al., NeurIPS 2025) train with ``noise = "additive_channel"``,
    ``noise_std = 0.03``, ``clip = "gaussian_channel"``, ``clip_sigma = 2.5``.
    """

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
        self.noise = as_enum("noise", self.noise, NoiseKind)
        self.clip = as_enum("clip", self.clip, ClipKind)
        check_range("noise_std", self.noise_std, 0.0)
        check_range("device_noise_scale", self.device_noise_scale, 0.0)
        check_range("t_min", self.t_min, 0.0, 1e12)
        check_range("t_max", self.t_max, self.t_min, 1e12)
        check_range("clip_sigma", self.clip_sigma, 0.0, lo_open=True)
        check_range("clip_value", self.clip_value, 0.0, lo_open=True)

    def sample_time(self, generator: torch.Generator | None) -> float:
        """A drift time for one batch: log-uniform in ``[t_min, t_max]`` (``t_min`` if they are equal)."""
        if self.t_max <= self.t_min:
            return self.t_min
        lo, hi = math.log(max(self.t_min, 1e-3)), math.log(self.t_max)
        u = float(torch.rand((), generator=generator).item())
        return math.exp(lo + u * (hi - lo))


def resolve_mapping(mapping: MappingConfig | str | None, **overrides: object) -> MappingConfig:
    """A :class:`MappingConfig` from a config, a preset name (``None`` = ``standard``) and overrides."""
    cfg = MAPPINGS.get(mapping or "standard") if not isinstance(mapping, MappingConfig) else mapping
    return cfg.replace(**overrides) if overrides else cfg


def resolve_device(device: DeviceConfig | str | None, **overrides: object) -> DeviceConfig:
    """A :class:`DeviceConfig` from a config, a preset name (``None`` = ``pcm``) and overrides."""
    cfg = DEVICES.get(device or "pcm") if not isinstance(device, DeviceConfig) else device
    return cfg.replace(**overrides) if overrides else cfg


_MAPPING_FIELDS = tuple(f.name for f in dataclasses.fields(MappingConfig))
_LAYER_FIELDS = (*_MAPPING_FIELDS, "device")


@dataclass
class AnalogConfig(Config):
    """Map layers onto crossbars (the ``analog`` transform).

    ``mapping`` / ``device``: preset names (``cimkit list mappings`` / ``cimkit list devices``) or
    full tables; ``mapping_overrides`` / ``device_overrides`` change some of their fields for every
    layer. ``overrides``: per-layer rules, layer-name pattern (exact name, glob, ``@first``,
    ``@last``) -> mapping fields and/or ``device`` (a preset name), applied in order, e.g.
    ``{"@first": {"n_slices": 2, "slice_bits": 4, "adc_bits": 10}}``. ``skip``: patterns of layers
    left digital. ``hwa``: hardware-aware training noise and clipping (used when the model is then
    fine-tuned), or None.
    """

    mapping: MappingConfig | str = "standard"
    device: DeviceConfig | str = "pcm"
    mapping_overrides: dict[str, Any] = field(default_factory=dict)
    device_overrides: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)
    hwa: HWAConfig | None = None

    def __post_init__(self) -> None:
        self.base_mapping()  # validate names and overrides now
        self.base_device()
        rules = self.rules()
        for pat, fields in rules.table.items():
            if "device" in fields:
                if not isinstance(fields["device"], str):
                    raise ConfigError(f"overrides.{pat}.device: expected a device preset name, got {fields['device']!r}")
                DEVICES.get(fields["device"])
            mf = {k: v for k, v in fields.items() if k != "device"}
            try:
                self.base_mapping().replace(**mf)
            except ConfigError as e:
                raise ConfigError(f"overrides.{pat}.{e}") from None
        if not isinstance(self.skip, list) or not all(isinstance(s, str) for s in self.skip):
            raise ConfigError(f"skip: expected a list of name patterns, got {self.skip!r}")

    def base_mapping(self) -> MappingConfig:
        try:
            return resolve_mapping(self.mapping, **self.mapping_overrides)
        except ConfigError as e:
            raise ConfigError(f"mapping: {e}") from None

    def base_device(self) -> DeviceConfig:
        try:
            return resolve_device(self.device, **self.device_overrides)
        except ConfigError as e:
            raise ConfigError(f"device: {e}") from None

    def rules(self) -> Rules:
        return Rules(self.overrides, allowed=_LAYER_FIELDS, where="overrides")

    def for_layer(self, ref: LayerRef) -> tuple[MappingConfig, DeviceConfig]:
        """The mapping and device of one layer (base configs with its rules applied)."""
        fields = self.rules().fields_for(ref)
        dev = self.base_device()
        if "device" in fields:
            dev = resolve_device(fields.pop("device"), **self.device_overrides)
        m = self.base_mapping()
        return (m.replace(**fields) if fields else m), dev
