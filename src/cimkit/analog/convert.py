"""Model-level verbs: convert to analog (reversibly), program, drift, calibrate.

``t`` is always seconds since programming (see :mod:`cimkit.analog.devices` for the time origin).
"""

from __future__ import annotations

import copy
import fnmatch
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from cimkit.analog.devices import DEVICES, DeviceConfig
from cimkit.analog.layers import AnalogConv1d, AnalogConv2d, AnalogLayer, AnalogLinear
from cimkit.analog.mapping import MAPPINGS, Compensation, MappingConfig, RangeMode
from cimkit.analog.periphery import abs_percentile
from cimkit.errors import ConfigError

__all__ = [
    "analog_layers",
    "calibrate",
    "convert",
    "drift",
    "program",
    "resolve_device",
    "resolve_mapping",
    "to_digital",
]

log = logging.getLogger(__name__)

_CONVERTIBLE: dict[type[nn.Module], type[AnalogLayer]] = {
    nn.Linear: AnalogLinear,
    nn.Conv1d: AnalogConv1d,
    nn.Conv2d: AnalogConv2d,
}
_TYPE_NAMES = {"linear": nn.Linear, "conv1d": nn.Conv1d, "conv2d": nn.Conv2d}


def resolve_mapping(mapping: MappingConfig | str | None, **overrides: object) -> MappingConfig:
    """A :class:`MappingConfig` from a config, a preset name (``None`` = ``standard``) and overrides."""
    cfg = MAPPINGS.get(mapping or "standard") if not isinstance(mapping, MappingConfig) else mapping
    return cfg.replace(**overrides) if overrides else cfg


def resolve_device(device: DeviceConfig | str | None, **overrides: object) -> DeviceConfig:
    """A :class:`DeviceConfig` from a config, a preset name (``None`` = ``pcm``) and overrides."""
    cfg = DEVICES.get(device or "pcm") if not isinstance(device, DeviceConfig) else device
    return cfg.replace(**overrides) if overrides else cfg


def analog_layers(model: nn.Module) -> Iterator[tuple[str, AnalogLayer]]:
    """``(qualified name, layer)`` for every analog layer in ``model``."""
    for name, mod in model.named_modules():
        if isinstance(mod, AnalogLayer):
            yield name, mod


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _candidates(model: nn.Module, layer_types: Sequence[type[nn.Module]]) -> list[tuple[str, nn.Module]]:
    out = []
    for name, mod in model.named_modules():
        if type(mod) in layer_types and name:
            if isinstance(mod, (nn.Conv1d, nn.Conv2d)) and mod.groups != 1:
                log.info("analog.convert: %s has groups=%d; it stays digital", name, mod.groups)
                continue
            out.append((name, mod))
    return out


def convert(
    model: nn.Module,
    mapping: MappingConfig | str | None = "standard",
    device: DeviceConfig | str | None = "pcm",
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    layer_types: Sequence[str] = ("linear", "conv1d", "conv2d"),
    keep_first: bool = False,
    keep_last: bool = False,
    filter: Callable[[str, nn.Module], bool] | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Swap ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` leaves for analog layers.

    A layer is converted when its qualified name matches one of ``include`` and none of
    ``exclude`` (shell wildcards), its type is in ``layer_types``, ``filter(name, module)`` (if
    given) is true, and it is not the first (``keep_first``) or last (``keep_last``) convertible
    layer in registration order. Grouped convolutions stay digital. The analog layers keep the
    parameter names, so ``to_digital`` restores the original model exactly. Returns the converted
    model (a deep copy unless ``inplace``).
    """
    mapping_cfg = resolve_mapping(mapping)
    device_cfg = resolve_device(device)
    types: list[type[nn.Module]] = []
    for t in layer_types:
        if t not in _TYPE_NAMES:
            from cimkit.errors import unknown

            raise unknown("layer type", t, _TYPE_NAMES)
        types.append(_TYPE_NAMES[t])
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, tuple(_CONVERTIBLE)):
        raise ConfigError("convert: pass a model that contains layers, not a bare nn.Linear/Conv (wrap it)")
    cands = _candidates(model, types)
    first = cands[0][0] if cands else None
    last = cands[-1][0] if cands else None
    n = 0
    for name, mod in cands:
        if (keep_first and name == first) or (keep_last and name == last):
            continue
        if not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        if filter is not None and not filter(name, mod):
            continue
        new = _CONVERTIBLE[type(mod)](mod, mapping_cfg, device_cfg)
        new.train(mod.training)
        _set_module(model, name, new)
        n += 1
    if n == 0:
        log.warning("analog.convert: no layer matched; the model stays digital")
    return model


def to_digital(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every analog layer by the digital layer it came from (with its current weights)."""
    if not inplace:
        model = copy.deepcopy(model)
    for name, layer in list(analog_layers(model)):
        _set_module(model, name, layer.to_digital().train(layer.training))
    return model


def program(model: nn.Module, seed: int = 0) -> nn.Module:
    """Program every analog layer once (programming noise, faults, drift draws) from ``seed``.

    Each layer draws from its own stream derived from ``seed`` and its name, so the same seed gives
    the same chip, and a layer's draws do not depend on other layers. Sets the time to 0 s.
    """
    from cimkit.utils import derive_seed

    layers = list(analog_layers(model))
    if not layers:
        raise ConfigError("program: the model has no analog layers; call cimkit.analog.convert first")
    for name, layer in layers:
        layer.program(derive_seed(int(seed), "program", name))
    return model


def drift(model: nn.Module, t_seconds: float, compensation: Compensation | str | None = None) -> nn.Module:
    """Set every analog layer to ``t_seconds`` after programming (drift, read-noise level, compensation).

    ``compensation`` overrides the mappings' drift compensation (``none``/``global``/``column``).
    """
    if t_seconds < 0:
        raise ConfigError(f"t_seconds: {t_seconds!r} is out of range; allowed: [0, inf)")
    layers = list(analog_layers(model))
    if not layers:
        raise ConfigError("drift: the model has no analog layers; call cimkit.analog.convert first")
    if compensation is not None:
        comp = Compensation(compensation) if not isinstance(compensation, Compensation) else compensation
        for _, layer in layers:
            layer.mapping = layer.mapping.replace(compensation=comp)
    for _, layer in layers:
        layer.set_time(float(t_seconds))
    return model


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    seed: int = 0,
    modes: Sequence[RangeMode | str] = (RangeMode.CALIBRATED, RangeMode.LEARNED),
) -> dict[str, dict[str, float]]:
    """Set DAC and ADC ranges from data: the mapping's percentile of ``|x|`` and ``|z|``.

    Two passes over ``batches`` (input tensors): first the DAC ranges with ideal periphery, then
    the ADC ranges with the calibrated DACs (output noise excluded). Only layers whose range mode
    is in ``modes`` are set (learned ranges get their initial value). Uses the model's current
    state (programmed or not), in eval mode. Returns ``{layer: {"dac": r, "adc": r}}``.
    """
    wanted = {RangeMode(m) for m in modes}
    layers = list(analog_layers(model))
    if not layers:
        raise ConfigError("calibrate: the model has no analog layers; call cimkit.analog.convert first")
    batches = list(batches)
    if not batches:
        raise ConfigError("calibrate: no calibration batches given")
    was_training = model.training
    model.eval()
    out: dict[str, dict[str, float]] = {name: {} for name, _ in layers}
    try:
        for phase in ("dac", "adc"):
            todo = []
            for name, layer in layers:
                mode = layer.mapping.dac_range_mode if phase == "dac" else layer.mapping.adc_range_mode
                bits = layer.mapping.dac_bits if phase == "dac" else layer.mapping.adc_bits
                if mode in wanted and bits > 0:
                    todo.append((name, layer))
            if not todo:
                continue
            for i, (_, layer) in enumerate(layers):
                layer._calib = phase
                layer._calib_samples = []
                layer._calib_generator = torch.Generator().manual_seed(seed * 1000 + i)
            for xb in batches:
                model(xb)
            for name, layer in todo:
                pct = layer.mapping.dac_percentile if phase == "dac" else layer.mapping.adc_percentile
                r = abs_percentile(layer._calib_samples, pct) if layer._calib_samples else 0.0
                if r <= 0:
                    r = float(layer.input_range if phase == "dac" else layer.output_range)
                target = layer.input_range if phase == "dac" else layer.output_range
                target.fill_(r)
                out[name][phase] = r
            for _, layer in layers:
                layer._calib = None
                layer._calib_samples = []
        for name, layer in layers:
            if out[name]:
                layer.calibrated = True
    finally:
        for _, layer in layers:
            layer._calib = None
            layer._calib_samples = []
        model.train(was_training)
    return out
