"""Cost model: energy, latency and area per layer, on CIM crossbars or a digital accelerator.

>>> from cimkit.cost import estimate
>>> table = estimate(model, x[:1], "rram_22nm")        # one shape-capturing pass, then the formulas
>>> print(table.format())                              # per-layer rows: MACs, tiles, ADC conversions, µJ by component
>>> table.total()["energy_uj"], table.total()["tops_w"]
>>> estimate(model, x[:1], "rram_22nm", adc="isaac_32nm")   # the same chip with another ADC model
>>> table.to_dict(); table.to_pandas()                 # pandas optional

Pieces: :func:`describe` (the hardware-independent records of one capture pass) and :func:`price`
(records on a spec); :func:`register_cost` / :func:`register_site` for new layer types; presets
:data:`SPECS` (hardware), :data:`ADCS` (ADC models), :data:`DIGITAL` (arithmetic), :data:`MEMORIES`
(DRAM). Formulas and sources: ``docs/cost.md``.
"""

from cimkit.cost.adc import ADCS, ADCModel, FlashADC, NeuroSimSAR, SchreierADC, TableADC, WaldenADC, adc_model
from cimkit.cost.analog import analog_crossbar
from cimkit.cost.capture import Call, Capture, Captured, capture
from cimkit.cost.digital import DIGITAL, MEMORIES, DigitalModel, MemoryModel
from cimkit.cost.estimate import MAP_MODES, Described, describe, estimate, price, price_layer, spec_crossbar
from cimkit.cost.handlers import register_cost, register_site, run_handlers
from cimkit.cost.layers import leaf_record, weighted_record
from cimkit.cost.record import (
    ADDITIVE_FIELDS,
    AREA_COMPONENTS,
    ENERGY_COMPONENTS,
    CrossbarMap,
    LayerCost,
    area_field,
    energy_field,
    field_unit,
)
from cimkit.cost.specs import SPECS, HardwareKind, HardwareSpec, WeightPairing, get_spec
from cimkit.cost.storage import storage_bytes, values_bytes
from cimkit.cost.table import DEFAULT_COLUMNS, CostTable

__all__ = [
    "ADCS", "ADDITIVE_FIELDS", "AREA_COMPONENTS", "DEFAULT_COLUMNS", "DIGITAL", "ENERGY_COMPONENTS", "MAP_MODES",
    "MEMORIES", "SPECS", "ADCModel", "Call", "Capture", "Captured", "CostTable", "CrossbarMap", "Described",
    "DigitalModel", "FlashADC", "HardwareKind", "HardwareSpec", "LayerCost", "MemoryModel", "NeuroSimSAR",
    "SchreierADC", "TableADC", "WaldenADC", "WeightPairing", "adc_model", "analog_crossbar", "area_field", "capture",
    "describe", "energy_field", "estimate", "field_unit", "get_spec", "leaf_record", "price", "price_layer", "register_cost",
    "register_site", "run_handlers", "spec_crossbar", "storage_bytes", "values_bytes", "weighted_record",
]  # fmt: skip
