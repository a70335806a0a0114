"""Price every variant of an experiment: the cost concern's result hook.

For each variant the runner hands over its final model (``VariantResult.model``); this hook runs the
cost model on one test example and adds, with units, ``energy_uj`` (µJ per inference), ``latency_us``,
``area_mm2``, ``tops_w`` and, where the variant did not report them, ``macs`` and (for a model
priced on a digital spec) ``size_bytes`` and ``bops`` (the one definition of
:mod:`cimkit.cost.storage`), and under ``details["cost"]`` the hardware (spec, ADC model,
arithmetic), the energy per component and the per-layer rows.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cimkit.analog.devices import DriftModel
from cimkit.analog.layers import AnalogLayer
from cimkit.cost.estimate import describe, price
from cimkit.cost.settings import CostSettings
from cimkit.cost.specs import get_spec

__all__ = ["LAYER_COLUMNS", "cost_result_hook", "spec_for_model"]

LAYER_COLUMNS = (
    "name", "type", "op", "hardware", "w_bits", "a_bits", "macs", "size_bytes", "tiles", "arrays", "adc_conversions",
    "energy_array_uj", "energy_adc_uj", "energy_dac_uj", "energy_accumulation_uj", "energy_digital_uj",
    "energy_buffer_uj", "energy_interconnect_uj", "energy_dram_uj", "energy_uj", "latency_us", "area_mm2",
)  # fmt: skip


def spec_for_model(model: nn.Module, settings: CostSettings) -> str:
    """The spec a model is priced on: the settings' CIM spec for a model with analog layers (by
    device family when unset: PCM-like power-law drift -> ``pcm_22nm``, else ``rram_22nm``), the
    digital baseline otherwise."""
    analog = [m for m in model.modules() if isinstance(m, AnalogLayer)]
    if not analog:
        return settings.digital_spec
    if settings.spec is not None:
        return settings.spec
    return "pcm_22nm" if analog[0].device_cfg.drift_model == DriftModel.POWER_LAW else "rram_22nm"


def cost_result_hook(ctx: Any, spec: Any, result: Any, settings: CostSettings | None) -> None:
    settings = settings or CostSettings()
    if not settings.enabled or result.model is None:
        return
    desc = describe(result.model, ctx.example_input(1))
    name = spec_for_model(result.model, settings)
    hw = get_spec(name)
    if hw.is_cim and settings.adc:
        hw = hw.replace(adc=settings.adc)
    table = price(desc, hw, spec_name=name)
    t = table.total()
    for key, unit in (("energy_uj", "µJ"), ("latency_us", "µs"), ("area_mm2", "mm²"), ("tops_w", "TOPS/W")):
        result.add_metric(key, float(t[key]), unit)
    # a model on crossbars keeps its weights as conductances: digital storage and bit-ops do not apply
    filled = [("macs", "MAC/sample")]
    if not hw.is_cim:
        filled += [("size_bytes", "bytes"), ("bops", "bit-op/sample")]
    for key, unit in filled:
        if key not in result.metrics:
            result.add_metric(key, float(t[key]), unit)
    cost = table.summary()
    if settings.layers:
        cost["layers"] = [{c: getattr(r, c) for c in LAYER_COLUMNS} for r in table.layers]
    result.details["cost"] = cost
