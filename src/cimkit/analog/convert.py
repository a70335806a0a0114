"""Model-level verbs: map onto crossbars (reversibly), program, drift.

``convert_(model, AnalogConfig(...))`` is the ``analog`` transform (also ``cimkit.apply_``);
``convert(model, mapping, device, ...)`` is the same on a copy, with keyword shortcuts. ``t`` is
always seconds since programming (see :mod:`cimkit.analog.devices` for the time origin).
"""

from __future__ import annotations

import copy
import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from cimkit.analog.config import AnalogConfig, HWAConfig, resolve_device, resolve_mapping
from cimkit.analog.devices import DeviceConfig
from cimkit.analog.hwa import set_hwa
from cimkit.analog.layers import AnalogLayer, analog_layers
from cimkit.analog.mapping import Compensation, MappingConfig
from cimkit.config import as_enum, check_range
from cimkit.errors import ConfigError, unknown
from cimkit.nn.adapters import standardize_
from cimkit.nn.transform import register_transform
from cimkit.nn.walk import FIRST, LAST, FilterFn, LayerRef, matches, select, set_module
from cimkit.utils import derive_seed

__all__ = ["analog_layers", "convert", "convert_", "drift", "program", "resolve_device", "resolve_mapping",
           "to_digital"]  # fmt: skip

log = logging.getLogger(__name__)

_TYPE_NAMES = {"linear": nn.Linear, "conv1d": nn.Conv1d, "conv2d": nn.Conv2d}


def _candidates(model: nn.Module, types: Sequence[type[nn.Module]]) -> list[LayerRef]:
    out = []
    for ref in select(model, tuple(types), exclude_types=AnalogLayer):
        mod = ref.module
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)) and mod.groups != 1:
            log.info("analog.convert: %s has groups=%d; it stays digital", ref.name, mod.groups)
            continue
        out.append(ref)
    return out


@register_transform(AnalogConfig, "analog", "map Linear/Conv layers onto simulated crossbars (AnalogConfig)")
def convert_(
    model: nn.Module,
    config: AnalogConfig | None = None,
    filter_fn: FilterFn | None = None,
    *,
    layer_types: Sequence[str] = ("linear", "conv1d", "conv2d"),
) -> nn.Module:
    """Swap the ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` layers of ``model`` (quantized or not)
    for analog layers, in place; returns ``model``.

    Each layer gets ``config``'s mapping and device with its per-layer ``overrides`` applied;
    layers matching ``skip`` or rejected by ``filter_fn(name, module)`` stay digital, and so do
    grouped convolutions. Already-analog layers are left alone. Every layer is checked (tile
    geometry, finite weights) before any is swapped. ``config.hwa`` enables hardware-aware noise.
    """
    cfg = config or AnalogConfig()
    types = []
    for t in layer_types:
        if t not in _TYPE_NAMES:
            raise unknown("layer type", t, _TYPE_NAMES)
        types.append(_TYPE_NAMES[t])
    if isinstance(model, tuple(_TYPE_NAMES.values())) and not list(model.children()):
        raise ConfigError("convert: pass a model that contains layers, not a bare nn.Linear/Conv (wrap it)")
    model = standardize_(model)  # e.g. GPT-2's Conv1D -> an equivalent nn.Linear (undone by undo_)
    todo = []
    for ref in _candidates(model, types):
        if any(matches(p, ref) for p in cfg.skip):
            continue
        if filter_fn is not None and not filter_fn(ref.name, ref.module):
            continue
        mapping, device = cfg.for_layer(ref)
        todo.append((ref, AnalogLayer.from_digital(ref.module, mapping, device, ref.name)))
    for ref, new in todo:
        new.train(ref.module.training)
        set_module(model, ref.name, new)
    if not todo:
        log.warning("analog.convert: no layer matched; the model stays digital")
    if cfg.hwa is not None:
        set_hwa(model, cfg.hwa)
    return model


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
    overrides: dict[str, dict[str, Any]] | None = None,
    hwa: HWAConfig | None = None,
    filter: FilterFn | None = None,
    inplace: bool = False,
) -> nn.Module:
    """:func:`convert_` on a deep copy of ``model`` (unless ``inplace``), with shortcuts.

    A layer is mapped when its qualified name matches one of ``include`` and none of ``exclude``
    (shell wildcards), its type is in ``layer_types``, ``filter(name, module)`` (if given) is true,
    and it is not the first (``keep_first``) or last (``keep_last``) convertible layer;
    ``overrides`` are per-layer mapping rules (see :class:`AnalogConfig`). The analog layers keep the
    parameter names, so :func:`to_digital` restores the original model exactly.
    """
    skip = list(exclude) + ([FIRST] if keep_first else []) + ([LAST] if keep_last else [])
    cfg = AnalogConfig(mapping=resolve_mapping(mapping), device=resolve_device(device), overrides=overrides or {},
                       skip=skip, hwa=hwa)  # fmt: skip
    inc = list(include)

    def keep(name: str, mod: nn.Module) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in inc) and (filter is None or filter(name, mod))

    if not inplace:
        model = copy.deepcopy(model)
    return convert_(model, cfg, keep, layer_types=layer_types)


def to_digital(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every analog layer by the digital layer it was made from (with its current weights;
    a quantized layer stays quantized: use ``cimkit.undo_`` for the plain model)."""
    if not inplace:
        model = copy.deepcopy(model)
    for name, layer in list(analog_layers(model)):
        set_module(model, name, layer.unwrap().train(layer.training))
    return model


def program(model: nn.Module, seed: int = 0) -> nn.Module:
    """Program every analog layer once (programming noise, faults, drift draws) from ``seed``.

    Each layer draws from its own stream derived from ``seed`` and its name, so the same seed gives
    the same chip, and a layer's draws do not depend on other layers. Sets the time to 0 s.
    """
    layers = list(analog_layers(model))
    if not layers:
        raise ConfigError("program: the model has no analog layers; call cimkit.analog.convert first")
    for name, layer in layers:
        layer.program(derive_seed(int(seed), "program", name))
    return model


def drift(model: nn.Module, t_seconds: float, compensation: Compensation | str | None = None) -> nn.Module:
    """Set every analog layer to ``t_seconds`` after programming (drift, read-noise level, compensation).

    ``compensation`` (``none``/``global``/``column``) overrides the mappings' drift compensation for
    this time only; the mappings are not changed.
    """
    check_range("t_seconds", t_seconds, 0.0, 1e12)
    layers = list(analog_layers(model))
    if not layers:
        raise ConfigError("drift: the model has no analog layers; call cimkit.analog.convert first")
    comp = None if compensation is None else as_enum("compensation", compensation, Compensation)
    for _, layer in layers:
        layer.set_time(float(t_seconds), comp)
    return model
