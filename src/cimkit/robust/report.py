"""Report section of the robustness concern: the primary metric vs relative weight-noise level
(mean ± std over seeds) for every pipeline evaluated with the ``weight_noise`` protocol."""

from __future__ import annotations

from typing import Any

from cimkit.report import Section, figure_html, table_html
from cimkit.report.html import have_matplotlib

__all__ = ["noise_sections"]


def noise_sections(records: list[dict[str, Any]]) -> list[Section]:
    recs = [r for r in records if "levels" in r.get("details", {}) and "noise_mean" in r.get("details", {})]
    if not recs:
        return []
    metric = recs[0]["details"].get("metric", "accuracy")
    fraction = recs[0].get("units", {}).get(metric, "") == "fraction"
    k, unit = (100.0, "%") if fraction else (1.0, recs[0].get("units", {}).get(metric, ""))
    levels = recs[0]["details"]["levels"]
    same = all(r["details"]["levels"] == levels for r in recs)
    rows = []
    for r in recs:
        d = r["details"]
        cells = [f"{k * m:.2f} ± {k * s:.2f}" for m, s in zip(d["noise_mean"], d["noise_std"])]
        rows.append([r["name"], d.get("relative", ""), *(cells if same else [", ".join(cells)])])
    headers = ["variant", "relative to"] + (
        [f"{metric} @ σ = {100 * lv:g} % ({unit})" for lv in levels] if same else [f"{metric} at levels ({unit})"]
    )
    body = table_html(headers, rows)
    if have_matplotlib():
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        for r in recs:
            d = r["details"]
            ax.errorbar([100 * lv for lv in d["levels"]], [k * m for m in d["noise_mean"]],
                        yerr=[k * s for s in d["noise_std"]], marker="o", capsize=3, label=r["name"])  # fmt: skip
        ax.set_xlabel("relative weight noise σ (% of each channel's abs-max)" if recs[0]["details"].get("relative")
                      == "channel" else "relative weight noise σ (%)")  # fmt: skip
        ax.set_ylabel(f"test {metric} ({unit})" if unit else f"test {metric}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        body = figure_html(fig, f"{metric} vs weight noise") + body
    return [Section(f"Robustness: {metric} vs relative weight noise", body)]
