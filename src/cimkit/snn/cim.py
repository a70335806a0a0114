"""Spiking networks on crossbars: spikes drive word lines as single pulses.

The stateless Linear/Conv layers of a :class:`~cimkit.snn.SpikingNet` are ordinary layers, so
:func:`cimkit.analog.convert_` maps them onto simulated crossbars (devices, tiling, ADCs, noise,
drift, hardware-aware training) like any ANN layer; the neurons (membranes, thresholds, resets)
stay digital. What differs is the input side: a layer fed by spikes sees only ``0`` and one level
``v`` (1 after amplitude folding), so each input is one word-line pulse (present or not) and no
multi-bit DAC is needed. :func:`spiking_analog_config` gives every such layer the mapping fields
``dac_bits = 0, dac_range_mode = "fixed", dac_range = v, bit_serial = false``: the input is then
exactly ``x / v ∈ {0, 1}`` times the conductances, with ``v`` applied digitally after the ADC, so
on an ideal crossbar (ideal ADC, no noise) the layer computes exactly what the digital layer does
(tested, ``tests/snn/test_cim.py``). Layers with multi-level inputs keep the mapping's DAC: the first
layer under direct encoding, and a layer after average pooling of spikes (its inputs are
fractions of a spike; count-gated max pooling keeps them binary). Which layers are spike-driven is measured on calibration batches
(:func:`spike_input_levels`). The cost model reads ``dac_bits = 0`` on a spike-driven layer as a
1-bit pulse driver, and prices the activity of :mod:`cimkit.snn.activity`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.analog.config import AnalogConfig
from cimkit.analog.convert import convert_
from cimkit.nn.walk import select
from cimkit.snn.activity import single_level

__all__ = ["spike_fields", "spike_input_levels", "spiking_analog_config", "to_crossbars"]


def spike_fields(level: float) -> dict[str, Any]:
    """Mapping fields of a layer driven by spikes of height ``level``: one pulse, no DAC."""
    return {"dac_bits": 0, "dac_range_mode": "fixed", "dac_range": float(level), "bit_serial": False}


@torch.no_grad()
def spike_input_levels(model: nn.Module, batches: list[Tensor]) -> dict[str, float | None]:
    """For every Linear/Conv of ``model``: the single nonzero input level seen on ``batches``
    (``None`` if no input was ever nonzero), for layers whose inputs were all ``0`` or that one
    level; layers with multi-level inputs are left out."""
    refs = select(model)
    seen: dict[str, float | None] = {r.name: None for r in refs}
    bad: set[str] = set()
    hooks = []
    for r in refs:
        def hook(_m: nn.Module, inp: tuple[Tensor, ...], _o: Tensor, name: str = r.name) -> None:
            lvl, single = single_level(inp[0].detach())
            if lvl is None or name in bad:
                return
            prev = seen[name]
            if not single or (prev is not None and not math.isclose(prev, lvl, rel_tol=1e-6)):
                bad.add(name)
            seen[name] = lvl

        hooks.append(r.module.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        for xb in batches:
            model(xb)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {k: v for k, v in seen.items() if k not in bad}


def spiking_analog_config(cfg: AnalogConfig, levels: dict[str, float | None]) -> AnalogConfig:
    """``cfg`` with the spike-input mapping (:func:`spike_fields`) for every layer in ``levels``,
    placed before ``cfg``'s own per-layer rules (which therefore still win)."""
    rules = {name: spike_fields(1.0 if lvl is None else abs(lvl)) for name, lvl in levels.items()}
    rules.update(cfg.overrides)
    return cfg.replace(overrides=rules)


def to_crossbars(model: nn.Module, cfg: AnalogConfig, batches: list[Tensor]) -> tuple[nn.Module, dict[str, float | None]]:
    """Map ``model`` (a spiking network) onto crossbars in place with spike-driven layers on
    single pulses; returns the model and the spike levels per layer."""
    levels = spike_input_levels(model, batches)
    return convert_(model, spiking_analog_config(cfg, levels)), levels
