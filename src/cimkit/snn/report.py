"""Report sections of the spiking concern: the primary metric and the activity against the number
of time steps T, for every variant evaluated with the ``time_steps`` protocol."""

from __future__ import annotations

from typing import Any

from cimkit.report import Section, figure_html, table_html
from cimkit.report.html import have_matplotlib

__all__ = ["time_steps_records", "time_steps_sections"]


def time_steps_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records holding a sweep over time steps."""
    return [r for r in records if r.get("details", {}).get("time_steps") and "values" in r.get("details", {})]


def time_steps_sections(records: list[dict[str, Any]]) -> list[Section]:
    recs = time_steps_records(records)
    if not recs:
        return []
    metric = recs[0]["details"].get("metric", "accuracy")
    frac = recs[0].get("units", {}).get(metric, "fraction") == "fraction"
    k, unit = (100.0, "%") if frac else (1.0, recs[0].get("units", {}).get(metric, ""))
    steps = sorted({t for r in recs for t in r["details"]["time_steps"]})
    rows = []
    for r in recs:
        d = r["details"]
        by_t = dict(zip(d["time_steps"], d["values"]))
        fp = d.get("fp32")
        rows.append([r["name"], "" if fp is None else f"{k * fp:.2f}",
                     *[f"{k * by_t[t]:.2f}" if t in by_t else "" for t in steps]])  # fmt: skip
    body = table_html(["variant", f"ANN {metric} ({unit})", *[f"T={t}" for t in steps]], rows)
    act_rows = []
    for r in recs:
        a = r["details"].get("activity")
        if a:
            tot = a["totals"]
            act_rows.append([r["name"], str(a["time_steps"]), f"{tot['spikes']:.4g}", f"{tot['synops']:.4g}",
                             f"{tot['macs']:.4g}", f"{tot['ann_macs']:.4g}", f"{tot['neuron_updates']:.4g}",
                             f"{tot['crossbar_reads']:.4g}"])  # fmt: skip
    if act_rows:
        body += "<p>Activity per inference (all time steps) at the reported T: spikes, synaptic operations on spike " \
                "inputs, MACs on multi-level inputs, the ANN's MACs for one pass, neuron updates, crossbar reads.</p>"
        body += table_html(["variant", "T", "spikes", "synops", "MACs (analog inputs)", "ANN MACs", "neuron updates",
                            "crossbar reads"], act_rows)  # fmt: skip
    if have_matplotlib():
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        for r in recs:
            d = r["details"]
            ax.plot(d["time_steps"], [k * v for v in d["values"]], marker="o", label=r["name"])
        fp = recs[0]["details"].get("fp32")
        if fp is not None:
            ax.axhline(k * fp, color="k", ls="--", lw=1, label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("time steps T")
        ax.set_ylabel(f"test {metric} ({unit})" if unit else f"test {metric}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        body = figure_html(fig, f"spiking {metric} vs time steps") + body
    return [Section(f"Spiking networks: {metric} vs time steps", body)]
