"""Plugin discovery: concerns register themselves, no central list names them.

Every subpackage of ``cimkit`` with a ``plugin`` module (``cimkit/quant/plugin.py``, ...) and every
module named by an installed package's ``cimkit.plugins`` entry point is imported once by
:func:`load_plugins`. Importing a plugin module registers what it brings: variant kinds, pipeline
steps, evaluation protocols, transforms, models, presets, ``cimkit list`` topics (:data:`TOPICS`)
and ``cimkit`` subcommands (:data:`COMMANDS`). A third-party package adds a concern with one entry
point::

    [project.entry-points."cimkit.plugins"]
    mything = "mypackage.cimkit_plugin"
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import pkgutil
from collections.abc import Callable
from typing import Any

import cimkit
from cimkit.registry import Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cimkit.plugins"

# ``cimkit list TOPIC [PATTERN]``: topic -> describe(pattern) -> [(name, description)]
TOPICS: Registry[Callable[[str], list[tuple[str, str]]]] = Registry("list topic", loader=lambda: load_plugins())

# ``cimkit NAME ...``: name -> add(subparsers) that adds the subcommand's parser and sets its
# ``func(args) -> int`` (``parser.set_defaults(func=...)``); :func:`cimkit.cli.build_parser` calls it
COMMANDS: Registry[Callable[[Any], None]] = Registry("command")

_loaded: set[str] = set()
_loading = False
_discovered: list[str] | None = None  # the plugin modules found by the first full discovery


def builtin_plugin_modules() -> list[str]:
    """``cimkit.<package>.plugin`` for every subpackage that has one (found on disk, not listed)."""
    out = []
    for info in pkgutil.iter_modules(cimkit.__path__):
        if not info.ispkg:
            continue
        name = f"cimkit.{info.name}.plugin"
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            out.append(name)
    return sorted(out)


def _entry_point_modules() -> list[str]:
    try:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as e:  # pragma: no cover - broken metadata of some other package
        log.warning("cimkit: could not read entry points: %s", e)
        return []
    return [ep.value.split(":")[0] for ep in eps]


def load_plugins(refresh: bool = False) -> bool:
    """Import every plugin module not imported yet; True if any was new. A call made while plugins
    are being imported (a plugin reading a registry) returns at once. Discovery (the subpackages on
    disk, the installed entry points: about 9 ms) runs once per process, since every transform calls
    this; ``refresh=True`` looks again (a package installed while the process runs)."""
    global _loading, _discovered
    if _loading or (_discovered is not None and not refresh):
        return False
    _loading = True
    try:
        names = [*builtin_plugin_modules(), *_entry_point_modules()]
        new = _load_all(names)
        _discovered = names
        return new
    finally:
        _loading = False


def _load_all(names: list[str]) -> bool:
    new = False
    for name in names:
        if name in _loaded:
            continue
        _loaded.add(name)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            # an optional extra of that plugin is missing: skip it, say why in the debug log
            if e.name and not name.startswith(e.name) and not e.name.startswith("cimkit"):
                log.debug("plugin %s skipped: %s", name, e)
                continue
            raise
        new = True
    return new
