"""Report sections of the cost concern: the task's primary metric against energy per inference with
its Pareto front, the energy of every layer split by component, and the hardware that priced each
variant."""

from __future__ import annotations

from typing import Any

from cimkit.cost.record import ENERGY_COMPONENTS, energy_field
from cimkit.report import Section, figure_html, table_html
from cimkit.report.html import have_matplotlib, metric_axis, primary_metric

__all__ = ["cost_sections", "metric_energy_figure", "pareto_front"]

_COLORS = {"array": "tab:green", "adc": "tab:red", "dac": "tab:orange", "accumulation": "tab:purple",
           "digital": "tab:blue", "buffer": "tab:brown", "interconnect": "tab:gray", "dram": "black"}  # fmt: skip
MAX_PANELS = 6


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the non-dominated points ``(energy, metric)``: no other point has at most the
    energy and a metric at least as good (strictly better in one), cheapest first."""
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front: list[int] = []
    best = -float("inf")
    for i in order:
        v = sign * points[i][1]
        if v > best:
            front.append(i)
            best = v
    return front


def _priced(results: dict[str, Any]) -> list[dict[str, Any]]:
    p = primary_metric(results)
    return [v for v in results.get("variants", []) if "energy_uj" in v["metrics"] and p in v["metrics"]]


def _pareto_figure(results: dict[str, Any], vs: list[dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    p = primary_metric(results)
    label, k, _ = metric_axis(results, p)
    hib = bool(results.get("task", {}).get("higher_is_better", True))
    pts = [(float(v["metrics"]["energy_uj"]), float(v["metrics"][p])) for v in vs]
    front = pareto_front(pts, hib)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for hw, marker in (("cim", "o"), ("digital", "s")):
        sel = [i for i, v in enumerate(vs) if v["details"].get("cost", {}).get("hardware") == hw]
        if sel:
            ax.scatter([pts[i][0] for i in sel], [k * pts[i][1] for i in sel], marker=marker, s=36,
                       label=f"{hw} ({', '.join(sorted({vs[i]['details']['cost']['spec'] for i in sel}))})")  # fmt: skip
    order = sorted(range(len(pts)), key=lambda i: pts[i][0])  # neighbours in energy get labels above/below
    for rank, i in enumerate(order):
        e, m = pts[i]
        ax.annotate(vs[i]["name"], (e, k * m), fontsize=7, xytext=(3, 4 if rank % 2 == 0 else -10),
                    textcoords="offset points")  # fmt: skip
    fx = [pts[i][0] for i in front]
    fy = [k * pts[i][1] for i in front]
    ax.step(fx, fy, where="post", color="black", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (µJ, log scale)")
    ax.set_ylabel(f"test {label}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def metric_energy_figure(results: dict[str, Any]) -> Any:
    """A matplotlib figure of the primary metric against energy per inference (log scale) for every
    priced variant of ``results`` (a ``results.json`` dict), with the Pareto front; None when no
    variant was priced."""
    vs = _priced(results)
    return _pareto_figure(results, vs) if vs else None


def _layers_figure(vs: list[dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    vs = vs[:MAX_PANELS]
    n = len(vs)
    cols = 1 if n == 1 else 2
    rows = -(-n // cols)
    n_layers = max(len([r for r in v["details"]["cost"]["layers"] if r["energy_uj"] > 0]) for v in vs)
    panel_w = max(4.5, min(12.0, 0.25 * n_layers + 2.5))
    fig, axes = plt.subplots(rows, cols, figsize=(panel_w * cols, 3.4 * rows), squeeze=False)
    used: set[str] = set()
    for ax, v in zip(axes.flat, vs):
        layers = [r for r in v["details"]["cost"]["layers"] if r["energy_uj"] > 0]
        x = range(len(layers))
        bottom = [0.0] * len(layers)
        for c in ENERGY_COMPONENTS:
            vals = [r[energy_field(c)] for r in layers]
            if any(vals):
                ax.bar(x, vals, bottom=bottom, color=_COLORS[c], width=0.8)
                used.add(c)
                bottom = [b + val for b, val in zip(bottom, vals)]
        ax.set_xticks(list(x), [r["name"] for r in layers], rotation=60, ha="right", fontsize=6)
        c = v["details"]["cost"]
        ax.set_title(f"{v['name']}: {c['spec']}, {c['energy_uj']:.3g} µJ", fontsize=9)
        ax.set_ylabel("energy (µJ)")
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    from matplotlib.patches import Patch

    comps = [c for c in ENERGY_COMPONENTS if c in used]
    fig.legend([Patch(color=_COLORS[c]) for c in comps], comps, fontsize=7, loc="lower center", ncol=len(comps))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def cost_sections(results: dict[str, Any]) -> list[Section]:
    """The cost sections for a results dict (none when no variant was priced)."""
    vs = _priced(results)
    if not vs:
        return []
    rows = []
    for v in vs:
        c = v["details"].get("cost", {})
        comp = c.get("energy_components_uj", {})
        top = sorted(comp.items(), key=lambda kv: -kv[1])[:3]
        share = ", ".join(f"{n} {100 * e / c['energy_uj']:.0f}%" for n, e in top if c.get("energy_uj"))
        rows.append([v["name"], c.get("spec", ""), c.get("hardware", ""), c.get("adc") or c.get("digital", ""),
                     f"{v['metrics']['energy_uj']:.4g}", f"{v['metrics'].get('latency_us', 0):.4g}",
                     f"{v['metrics'].get('area_mm2', 0):.4g}", f"{v['metrics'].get('tops_w', 0):.4g}", share])  # fmt: skip
    table = table_html(["variant", "spec", "hardware", "ADC / arithmetic", "energy (µJ)", "latency (µs)",
                        "area (mm²)", "TOPS/W", "largest energy shares"], rows)  # fmt: skip
    note = ("<p>Per inference, from one shape-capturing pass of a test example; digital variants on the digital "
            "baseline, analog ones on a CIM spec. Formulas and sources: <code>docs/cost.md</code>.</p>")  # fmt: skip
    out = [Section("Cost: energy, latency and area per inference", note + table)]
    if have_matplotlib():
        p = primary_metric(results)
        out.insert(0, Section(f"{p.capitalize()} vs energy per inference",
                              figure_html(_pareto_figure(results, vs), f"{p} vs energy")))  # fmt: skip
        with_layers = [v for v in vs if v["details"].get("cost", {}).get("layers")]
        if with_layers:
            extra = f" (first {MAX_PANELS} variants)" if len(with_layers) > MAX_PANELS else ""
            out.append(Section(f"Energy per layer by component{extra}",
                               figure_html(_layers_figure(with_layers), "energy per layer by component")))  # fmt: skip
    return out
