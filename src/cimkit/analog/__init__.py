"""Analog compute-in-memory simulation: crossbar mapping, device physics, periphery, drift, HWA training.

Typical use::

    from cimkit import analog
    amodel = analog.convert(model, mapping="standard", device="pcm", keep_first=True)
    analog.program(amodel, seed=0)        # programming noise, faults, drift draws (once)
    analog.drift(amodel, 86400.0)         # one day after programming, with drift compensation
    amodel.eval(); y = amodel(x)          # every forward reads with fresh read noise
    digital = analog.to_digital(amodel)   # back to the digital model

The transform form is ``cimkit.apply_(model, analog.AnalogConfig(...))`` (in place; per-layer rules
in ``overrides``); it stacks on quantization: the crossbars are programmed with the quantized weights.
Presets: ``analog.DEVICES`` (``ideal``, ``pcm``, ``rram``, ``rram_saf``) and ``analog.MAPPINGS``
(``ideal``, ``standard``, ``calibrated``, ``learned``, ``sliced_bitserial``, ``offset``).
"""

from __future__ import annotations

from cimkit.analog.calibration import calibrate, ranges
from cimkit.analog.config import AnalogConfig, ClipKind, HWAConfig, NoiseKind, resolve_device, resolve_mapping
from cimkit.analog.convert import convert, convert_, drift, program, to_digital
from cimkit.analog.devices import (
    DEVICES,
    DeviceConfig,
    DeviceState,
    DriftModel,
    device_preset,
    devices_at,
    drift_exponents,
    drift_factor,
    ir_drop_factor,
    program_conductance,
    program_devices,
    programming_noise_std,
    quantize_levels,
    read_noise_std,
    relaxation_std,
    sample_stuck_at,
)
from cimkit.analog.hwa import clip_hook, clip_weights, hwa_fit, set_hwa, set_weight_noise
from cimkit.analog.layers import AnalogConv1d, AnalogConv2d, AnalogLayer, AnalogLinear, analog_layers
from cimkit.analog.mapping import (
    MAPPINGS,
    Compensation,
    ConvRoute,
    MappingConfig,
    RangeMode,
    WeightPair,
    WeightScaling,
    mapping_preset,
    slice_codes,
    slice_coefficients,
)
from cimkit.analog.periphery import gaussian_noise, range_quantize
from cimkit.analog.tiling import TileGeometry

__all__ = [
    "DEVICES", "MAPPINGS", "AnalogConfig", "AnalogConv1d", "AnalogConv2d", "AnalogLayer", "AnalogLinear",
    "ClipKind", "Compensation", "ConvRoute", "DeviceConfig", "DeviceState", "DriftModel", "HWAConfig",
    "MappingConfig", "NoiseKind", "RangeMode", "TileGeometry", "WeightPair", "WeightScaling", "analog_layers",
    "calibrate", "clip_hook", "clip_weights", "convert", "convert_", "device_preset", "devices_at", "drift",
    "drift_exponents", "drift_factor", "gaussian_noise", "hwa_fit", "ir_drop_factor", "mapping_preset",
    "program", "program_conductance", "program_devices", "programming_noise_std", "quantize_levels",
    "range_quantize", "ranges", "read_noise_std", "relaxation_std", "resolve_device", "resolve_mapping",
    "sample_stuck_at", "set_hwa", "set_weight_noise", "slice_codes", "slice_coefficients", "to_digital",
]  # fmt: skip
