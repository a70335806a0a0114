"""cimkit: take any PyTorch model to efficient hardware and say what it costs and how accurate it stays."""

from __future__ import annotations

__version__ = "0.1.0"

from cimkit.errors import CimkitError, ConfigError, DataError

__all__ = ["CimkitError", "ConfigError", "DataError", "__version__"]
