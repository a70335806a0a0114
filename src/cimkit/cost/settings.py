"""The ``[cost]`` table of an experiment: which hardware prices each variant.

::

    [cost]
    spec = "rram_22nm"          # CIM spec of analog variants (default: by device family, see below)
    digital_spec = "systolic_22nm"
    adc = "isaac_32nm"          # swap the CIM spec's ADC model
    enabled = true

A variant whose final model has analog layers is priced on ``spec`` (when unset: ``pcm_22nm`` for
PCM-like devices (power-law drift), ``rram_22nm`` otherwise); every other variant on the digital
baseline ``digital_spec``. ``layers = false`` keeps only the totals in results.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimkit.config import Config
from cimkit.cost.adc import ADCS
from cimkit.cost.specs import SPECS, reg_error
from cimkit.errors import ConfigError

__all__ = ["CostSettings"]


@dataclass
class CostSettings(Config):
    """See the module docstring."""

    enabled: bool = True
    spec: str | None = None
    digital_spec: str = "systolic_22nm"
    adc: str | None = None
    layers: bool = True

    def __post_init__(self) -> None:
        for name, reg in (("spec", SPECS), ("digital_spec", SPECS), ("adc", ADCS)):
            value = getattr(self, name)
            if value is not None and value not in reg:
                raise ConfigError(f"{name}: {reg_error(reg, value)}")
