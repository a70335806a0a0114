"""cimkit: take any PyTorch model to efficient hardware and say what it costs and how accurate it stays.

The verbs live in their concern's package and are re-exported here lazily (importing ``cimkit``
stays cheap): ``cimkit.quantize_``, ``cimkit.dequantize_``, ``cimkit.mixed_precision``,
``cimkit.run_experiment``; the analog simulator is ``cimkit.analog`` (``convert``, ``program``, ``drift``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from cimkit.errors import CimkitError, ConfigError, DataError

_LAZY = {
    "quantize_": "cimkit.quant",
    "dequantize_": "cimkit.quant",
    "QuantConfig": "cimkit.quant",
    "apply_": "cimkit.nn",
    "undo_": "cimkit.nn",
    "mixed_precision": "cimkit.mixed",
    "run_experiment": "cimkit.experiment",
    "ExperimentConfig": "cimkit.experiment",
}

__all__ = ["CimkitError", "ConfigError", "DataError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cimkit' has no attribute '{name}'")
