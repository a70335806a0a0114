"""Report section of the analog concern: the primary metric vs time after programming (mean ± std
over chips) for every variant that ran a ``chips_times`` sweep (``analog`` and ``pipeline`` kinds)."""

from __future__ import annotations

from typing import Any

from cimkit.report import Section, figure_html, table_html
from cimkit.report.html import have_matplotlib

__all__ = ["analog_sections", "sweep_records"]


def sweep_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records holding a chips x times sweep."""
    return [r for r in records if r.get("details", {}).get("times") and "mean" in r.get("details", {})]


def analog_sections(records: list[dict[str, Any]]) -> list[Section]:
    recs = sweep_records(records)
    if not recs:
        return []
    metric = recs[0]["details"].get("metric", "accuracy")
    unit_is_fraction = recs[0].get("units", {}).get(metric, "fraction") == "fraction"
    k = 100.0 if unit_is_fraction else 1.0
    unit = "%" if unit_is_fraction else recs[0].get("units", {}).get(metric, "")
    rows = []
    for r in recs:
        d = r["details"]
        cells = [f"{k * m:.2f} ± {k * s:.2f}" for m, s in zip(d["mean"], d["std"])]
        rows.append([r["name"], str(d.get("device", r["config"].get("device", ""))), "yes" if d.get("hwa") else "no",
                     str(d.get("compensation") or ""), *cells])  # fmt: skip
    all_labels = recs[0]["details"]["labels"]
    same = all(r["details"]["labels"] == all_labels for r in recs)
    headers = ["variant", "device", "HWA", "compensation"] + (
        [f"{metric} @ {lab} ({unit})" for lab in all_labels] if same else [f"{metric} at times ({unit})"]
    )
    if not same:
        rows = [[*row[:4], ", ".join(row[4:])] for row in rows]
    body = table_html(headers, rows)
    if have_matplotlib():
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        for r in recs:
            d = r["details"]
            ts = [max(t, 1e-1) for t in d["times"]]
            ax.errorbar(ts, [k * m for m in d["mean"]], yerr=[k * s for s in d["std"]], marker="o", capsize=3,
                        label=r["name"])  # fmt: skip
        fp32 = recs[0]["details"].get("fp32")
        if fp32 is not None:
            ax.axhline(k * fp32, color="k", ls="--", lw=1, label="fp32")
        ax.set_xscale("log")
        ax.set_xlabel("time after programming (s)")
        ax.set_ylabel(f"test {metric} ({unit})" if unit else f"test {metric}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        body = figure_html(fig, f"analog {metric} vs time") + body
    return [Section(f"Analog CIM: {metric} vs time after programming", body)]
