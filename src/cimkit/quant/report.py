"""Report sections of the ``ptq`` and ``qat`` kinds: a summary table, accuracy vs size, per-layer costs."""

from __future__ import annotations

import html
from typing import Any

from cimkit.report import Section, figure_html, table_html
from cimkit.report.html import have_matplotlib

__all__ = ["quant_sections"]



def _primary(r: dict[str, Any]) -> tuple[str, float, str]:
    """``(metric, display scale, unit)`` of a record's primary metric (the one with an ``fp32_`` twin)."""
    p = next((k[5:] for k in r["metrics"] if k.startswith("fp32_")), "accuracy")
    unit = r.get("units", {}).get(p, "")
    return (p, 100.0, "%") if unit == "fraction" else (p, 1.0, unit)


def quant_sections(title: str, records: list[dict[str, Any]]) -> list[Any]:
    """A summary table, a primary-metric-vs-size plot and per-layer tables for ``ptq``/``qat`` records."""
    if not records:
        return []
    p, k, unit = _primary(records[0])
    du = "pts" if unit == "%" else unit
    headers = ["variant", "bits", f"{p} ({unit})", f"Δ vs fp32 ({du})", "size (KiB)", "compression", "MMACs", "GBOPs"]
    rows = []
    for r in records:
        m = r["metrics"]
        rows.append([
            r["name"], r.get("details", {}).get("label", ""), f"{k * m[p]:.4g}",
            f"{k * (m[p] - m[f'fp32_{p}']):+.3g}", f"{m['size_bytes'] / 1024:.1f}", f"{m['compression']:.1f}x",
            f"{m['macs'] / 1e6:.3f}", f"{m['bops'] / 1e9:.3f}",
        ])  # fmt: skip
    body = table_html(headers, rows)
    if have_matplotlib():
        body += _size_plot(title, records, p, k, unit)
    for r in records:
        layers = r.get("details", {}).get("layers") or []
        if not layers:
            continue
        lrows = [[x["name"], x["type"], x["w_bits"], x["a_bits"], f"{x['params']:,}", f"{x['macs']:,}",
                  f"{x['bops']:,}", f"{x['size_bytes']:.0f}"] for x in layers]  # fmt: skip
        t = r["details"].get("total", {})
        if t:
            lrows.append(["total", "", f"{t.get('avg_w_bits', 0):.2f} avg", "", f"{t.get('params', 0):,}",
                          f"{t.get('macs', 0):,}", f"{t.get('bops', 0):,}", f"{t.get('size_bytes', 0):.0f}"])  # fmt: skip
        tab = table_html(["layer", "type", "W bits", "A bits", "params", "MACs", "BOPs", "size (B)"], lrows)
        body += f"<details><summary>per-layer costs: {html.escape(r['name'])}</summary>{tab}</details>"
    return [Section(title, body)]


def _size_plot(title: str, records: list[dict[str, Any]], p: str, k: float, unit: str) -> str:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    m0 = records[0]["metrics"]
    ax.scatter([m0["float_size_bytes"] / 1024], [k * m0[f"fp32_{p}"]], marker="*", s=140, color="k",
               label="fp32")  # fmt: skip
    markers = "osD^vP<>X"
    for i, r in enumerate(records):
        m = r["metrics"]
        ax.scatter([m["size_bytes"] / 1024], [k * m[p]], marker=markers[i % len(markers)], s=50,
                   label=r["name"])  # fmt: skip
    ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    if unit == "%":
        accs = [k * r["metrics"][p] for r in records] + [k * m0[f"fp32_{p}"]]
        ax.set_ylim(max(0.0, min(accs) - 2.0), min(100.0, max(accs) + 1.0) + 0.3)
    ax.set_xlabel("model size (KiB, log scale)")
    ax.set_ylabel(f"test {p} ({unit})" if unit else f"test {p}")
    ax.set_title(f"{title}: {p} vs size")
    ax.grid(alpha=0.3)
    return figure_html(fig, f"{p} vs size")
