"""Collect the report sections of every variant kind present in a results dict (the experiment
layer asks the kinds; :mod:`cimkit.report` only renders what it is handed)."""

from __future__ import annotations

import logging
from typing import Any

from cimkit.experiment.variant import VARIANTS
from cimkit.report import Section

log = logging.getLogger(__name__)


def variant_sections(results: dict[str, Any]) -> list[Section]:
    """Each kind's ``report_sections(records)``, in the order the kinds first appear."""
    kinds: list[str] = []
    for v in results.get("variants", []):
        if v["kind"] not in kinds:
            kinds.append(v["kind"])
    out: list[Section] = []
    for kind in kinds:
        if kind not in VARIANTS:
            continue
        records = [v for v in results["variants"] if v["kind"] == kind]
        try:
            out.extend(VARIANTS.get(kind).report_sections(records))
        except ImportError as e:
            log.warning("report section for %s skipped: %s", kind, e)
    return out
