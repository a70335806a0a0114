"""Plugin of the quantization concern: the ``ptq``/``qat`` kinds, its pipeline steps, its presets."""

from cimkit.plugins import TOPICS
from cimkit.quant import steps, variants  # noqa: F401  (register the kinds and steps)
from cimkit.quant.config import QUANT_PRESETS

TOPICS.add("quant-presets", QUANT_PRESETS.describe, "quantization presets (QuantConfig)")
