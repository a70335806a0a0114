"""Cost handler of analog layers: the layer's own crossbar geometry and converter chain.

An :class:`~cimkit.analog.AnalogLayer` is priced from the record of the layer it was made from (a
float or quantized Linear/Conv: MACs, bits, storage, via ``nxt()``) plus its real tile map: the
:class:`~cimkit.analog.TileGeometry` it computes with, its ``n_slices`` cells per device, 2 devices
for a differential pair (1 for the offset mapping), ``dac_bits − 1`` input cycles when bit-serial
(sign-magnitude pulses), and the arrays it leaves unprogrammed (``tile_occupancy()``, all-zero
arrays). Its ADC conversions per inference are then exactly those the simulator performs per
sample (``conversion_counter``: planes x row tiles x slices x outputs x output positions) when the
spec reads whole tiles at once (``parallel_rows = 0``) and every array is occupied.

An ideal converter of the mapping (``dac_bits`` or ``adc_bits`` 0) has no resolution to price; the
spec's widths are used for it (``a_bits``-bit DAC, ``adc_bits`` ADC).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cimkit.analog.layers import AnalogLayer
from cimkit.analog.mapping import WeightPair
from cimkit.cost.capture import Captured
from cimkit.cost.handlers import register_cost
from cimkit.cost.record import CrossbarMap, LayerCost

__all__ = ["analog_crossbar"]


def analog_crossbar(layer: AnalogLayer) -> CrossbarMap:
    """The crossbar map an analog layer computes with (module docstring)."""
    m = layer.mapping
    bit_serial = bool(m.bit_serial and m.dac_bits > 0)
    planes = m.dac_bits - 1 if bit_serial else 1
    return CrossbarMap(
        geometry=layer.geometry, slices=int(layer.n_slices), devices=2 if m.pair == WeightPair.DIFFERENTIAL else 1,
        planes=planes, dac_bits=1 if bit_serial else int(m.dac_bits), adc_bits=int(m.adc_bits), bit_serial=bit_serial,
        occupancy=layer.tile_occupancy().cpu().numpy(), source="layer",
    )  # fmt: skip


@register_cost(AnalogLayer)  # output shape: the digital layer's rule, found further down the MRO
def _analog(mod: nn.Module, cap: Captured, nxt: Any) -> LayerCost:
    rec = nxt()
    rec.crossbar = analog_crossbar(mod)  # type: ignore[arg-type]
    rec.hardware = "cim"
    return rec
