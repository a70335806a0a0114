"""DAC and ADC range calibration from data, through a recorder the layers report to.

``calibrate(model, batches)`` runs two passes: first the DAC ranges (each layer's input ``|x|``,
with ideal periphery), then the ADC ranges (each layer's partial sums ``|z|`` with the calibrated
DACs, output noise excluded); a range is the mapping's percentile (``dac_percentile`` /
``adc_percentile``) of the recorded values. During a pass every analog layer holds a
:class:`RangeRecorder` (its ``recorder``) and reports to it; outside a pass ``recorder`` is None.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from cimkit.analog.layers import AnalogLayer, analog_layers
from cimkit.analog.mapping import RangeMode
from cimkit.analog.periphery import abs_percentile, subsample
from cimkit.errors import ConfigError

__all__ = ["RangeRecorder", "calibrate", "ranges", "recording"]

_CALIB_MAX_ITEMS = 200_000


@dataclass
class RangeRecorder:
    """Collects subsampled values of one layer during one calibration ``phase`` (``dac`` or ``adc``)."""

    phase: str
    generator: torch.Generator
    samples: list[Tensor] = field(default_factory=list)

    def record(self, values: Tensor) -> None:
        self.samples.append(subsample(values, _CALIB_MAX_ITEMS, self.generator))

    def percentile(self, pct: float) -> float:
        return abs_percentile(self.samples, pct) if self.samples else 0.0


@contextmanager
def recording(layers: Sequence[AnalogLayer], phase: str, seed: int) -> Iterator[list[RangeRecorder]]:
    """Attach a fresh recorder of ``phase`` to every layer for the duration of the block."""
    recs = [RangeRecorder(phase, torch.Generator().manual_seed(seed * 1000 + i)) for i in range(len(layers))]
    try:
        for layer, rec in zip(layers, recs):
            layer.recorder = rec
        yield recs
    finally:
        for layer in layers:
            layer.recorder = None


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    seed: int = 0,
    modes: Sequence[RangeMode | str] = (RangeMode.CALIBRATED, RangeMode.LEARNED),
) -> nn.Module:
    """Set DAC and ADC ranges from data (module docstring); returns ``model``.

    Only layers whose range mode is in ``modes`` are set (learned ranges get their initial value).
    Uses the model's current state (programmed or not), in eval mode. :func:`ranges` reads the
    ranges back.
    """
    wanted = {RangeMode(m) for m in modes}
    named = list(analog_layers(model))
    if not named:
        raise ConfigError("calibrate: the model has no analog layers; call cimkit.analog.convert first")
    batches = list(batches)
    if not batches:
        raise ConfigError("calibrate: no calibration batches given")
    layers = [layer for _, layer in named]
    was_training = model.training
    model.eval()
    try:
        for phase in ("dac", "adc"):
            todo = []
            for i, layer in enumerate(layers):
                mode = layer.mapping.dac_range_mode if phase == "dac" else layer.mapping.adc_range_mode
                bits = layer.mapping.dac_bits if phase == "dac" else layer.mapping.adc_bits
                if mode in wanted and bits > 0:
                    todo.append(i)
            if not todo:
                continue
            with recording(layers, phase, seed) as recs:
                for xb in batches:
                    model(xb)
            for i in todo:
                layer = layers[i]
                pct = layer.mapping.dac_percentile if phase == "dac" else layer.mapping.adc_percentile
                r = recs[i].percentile(pct)
                target = layer.input_range if phase == "dac" else layer.output_range
                if r > 0:
                    target.fill_(r)
                layer.calibrated = True
    finally:
        model.train(was_training)
    return model


def ranges(model: nn.Module) -> dict[str, dict[str, float]]:
    """``{layer: {"dac": r, "adc": r}}``: the DAC input range and ADC range of every analog layer."""
    return {n: {"dac": float(m.input_range), "adc": float(m.output_range)} for n, m in analog_layers(model)}
