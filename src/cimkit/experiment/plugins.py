"""Import the modules that register variant kinds (each concern owns its own ``variants`` module)."""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# Modules that register variant kinds when imported. A module that fails to import because an optional
# extra is missing is skipped with a debug message; any other error propagates.
VARIANT_MODULES: tuple[str, ...] = (
    "cimkit.quant.variants",
    "cimkit.analog.variants",
    "cimkit.mixed.variants",
)


def load_variant_plugins() -> None:
    for name in VARIANT_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (e.name == name or name.startswith(e.name + ".")):
                log.debug("variant module %s not present", name)
                continue
            raise
