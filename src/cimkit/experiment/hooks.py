"""Generic extension points of the runner: what a concern adds to every experiment without the
experiment layer naming it (a concern's plugin module registers into these).

* :data:`CONCERN_SETTINGS`: concern name -> :class:`~cimkit.config.Config` class of a top-level
  table of the experiment file (``[cost]`` ...), validated when the experiment is parsed and kept
  in ``ExperimentConfig.concerns``; ``cfg.settings(name)`` gives the validated instance.
* :data:`RESULT_HOOKS`: name -> ``hook(ctx, spec, result, settings)`` run by the runner on every
  variant's :class:`~cimkit.experiment.VariantResult` right after the variant ran (before it is
  written), with ``settings`` the concern's settings of the same name (None if it registered
  none). A hook may add metrics (with units) and details; ``result.model`` is the variant's final
  model when the kind provides it. A :class:`~cimkit.errors.CimkitError` from a hook is logged and
  recorded in ``details["<name>_error"]``; the run goes on.
* :data:`REPORT_HOOKS`: name -> ``sections(results) -> list[Section]`` appended to ``report.html``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cimkit.config import Config
from cimkit.errors import CimkitError
from cimkit.registry import Registry

if TYPE_CHECKING:
    from cimkit.experiment.context import RunContext
    from cimkit.experiment.variant import VariantResult
    from cimkit.report import Section

__all__ = ["CONCERN_SETTINGS", "REPORT_HOOKS", "RESULT_HOOKS", "report_hook_sections", "run_result_hooks"]

log = logging.getLogger(__name__)

CONCERN_SETTINGS: Registry[type[Config]] = Registry("experiment settings table")
RESULT_HOOKS: Registry[Callable[..., None]] = Registry("result hook")
REPORT_HOOKS: Registry[Callable[[dict[str, Any]], list[Any]]] = Registry("report hook")


def run_result_hooks(cfg: Any, ctx: RunContext, spec: Any, result: VariantResult) -> None:
    """Every registered result hook on ``result`` (module docstring), in name order; ``cfg`` is the
    :class:`~cimkit.experiment.ExperimentConfig`, ``spec`` the variant's ``VariantSpec``."""
    for name in RESULT_HOOKS:
        settings = cfg.settings(name) if name in CONCERN_SETTINGS else None
        try:
            RESULT_HOOKS.get(name)(ctx, spec, result, settings)
        except CimkitError as e:
            log.warning("%s for variant %s skipped: %s", name, spec.name, e)
            result.details[f"{name}_error"] = str(e)


def report_hook_sections(results: dict[str, Any]) -> list[Section]:
    """The sections every report hook adds for ``results``."""
    out: list[Any] = []
    for name in REPORT_HOOKS:
        try:
            out.extend(REPORT_HOOKS.get(name)(results))
        except ImportError as e:
            log.warning("report section of %s skipped: %s", name, e)
    return out
