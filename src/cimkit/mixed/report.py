"""Report sections of the ``mixed`` kind: the task's primary metric and Ω vs weight size, the plans, the plan per layer."""

from __future__ import annotations

from typing import Any

from cimkit.report import Section, figure_html, table_html
from cimkit.report.html import have_matplotlib

__all__ = ["mixed_sections", "pareto_figure"]


def _metric(records: list[dict[str, Any]]) -> tuple[str, float, str]:
    """``(primary metric, display scale, unit)`` of the records (accuracy in %, loss in nats, ...)."""
    p = records[0].get("details", {}).get("metric", "accuracy")
    unit = records[0].get("units", {}).get(p, "fraction")
    return (p, 100.0, "%") if unit == "fraction" else (p, 1.0, unit)


def mixed_sections(records: list[dict[str, Any]]) -> list[Section]:
    if not records:
        return []
    p, k, unit = _metric(records)
    sections = []
    if have_matplotlib():
        sections.append(
            Section(
                f"Mixed precision: {p} and Ω vs weight size",
                figure_html(pareto_figure(records), "mixed-precision Pareto plot"),
            )
        )
    rows = [
        [
            r["name"],
            ", ".join(f"{n}={v:.6g}" for n, v in r["details"]["plan"].get("budget", {}).items()),
            f"{_plan_size(r):.0f}",
            f"{r['metrics']['avg_w_bits']:.2f}",
            f"{k * r['metrics'][f'ptq_{p}']:.4g}",
            f"{k * r['metrics'][p]:.4g}",
            f"{k * r['metrics'][f'random_{p}_mean']:.4g}" if f"random_{p}_mean" in r["metrics"] else "",
        ]
        for r in records
    ]
    sections.append(Section("Mixed precision: plans", table_html(
        ["variant", "budget", "Linear/Conv bytes", "avg W bits", f"PTQ {p} ({unit})", f"QAT {p} ({unit})",
         f"random plans {p} ({unit})"], rows
    )))  # fmt: skip
    for r in records:
        lrows = [
            [x["layer"], x["params"], x["macs"], f"{x['mean_trace']:.4g}", x["w_bits"], f"{x['omega']:.3g}"]
            for x in r["details"]["layers"]
        ]
        sections.append(Section(f"Plan per layer: {r['name']}", table_html(
            ["layer", "weights", "MACs", "Tr(H)/n", "W bits", "Ω"], lrows
        )))  # fmt: skip
    return sections


def _plan_size(r: dict[str, Any]) -> float:
    """The plan's storage of the Linear/Conv layers (``plan_size_bytes``; older results: ``size_bytes``)."""
    m = r["metrics"]
    return float(m.get("plan_size_bytes", m.get("size_bytes", 0.0)))


def pareto_figure(records: list[dict[str, Any]]) -> Any:
    """Two panels: accuracy vs weight size (mixed plans, uniform points, random plans) and the
    Ω-vs-size Pareto frontier with the same plans marked. ``records`` are results.json entries."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    p, k, unit = _metric(records)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    seen_uniform: dict[int, dict[str, Any]] = {}
    for r in records:
        for u in r["details"].get("uniform", []):
            seen_uniform.setdefault(u["bits"], u)
    if seen_uniform:
        us = [seen_uniform[b] for b in sorted(seen_uniform)]
        ax1.plot([u["size_bytes"] / 1e3 for u in us], [k * u[p] for u in us], "s--", color="tab:gray",
                 label="uniform (" + ("QAT" if any(f"ptq_{p}" in u and u[p] != u[f"ptq_{p}"] for u in us) else "PTQ") + ")")  # fmt: skip
        for u in us:
            ax1.annotate(f"W{u['bits']}", (u["size_bytes"] / 1e3, k * u[p]), textcoords="offset points",
                         xytext=(4, -10), fontsize=8)  # fmt: skip
            ax2.plot(u["size_bytes"] / 1e3, u["omega"], "s", color="tab:gray")
    rs = sorted(records, key=_plan_size)
    ax1.plot([_plan_size(r) / 1e3 for r in rs], [k * r["metrics"][p] for r in rs], "o-",
             color="tab:red", label="Hessian mixed precision")  # fmt: skip
    ax1.plot([_plan_size(r) / 1e3 for r in rs], [k * r["metrics"][f"ptq_{p}"] for r in rs], "o",
             mfc="none", color="tab:red", label="mixed, before QAT")  # fmt: skip
    rnd = [x for r in records for x in r["details"].get("random", [])]
    if rnd:
        ax1.plot([x["size_bytes"] / 1e3 for x in rnd], [k * x[p] for x in rnd], "x", color="tab:blue",
                 label="random plans, same size")  # fmt: skip
        ax2.plot([x["size_bytes"] / 1e3 for x in rnd], [x["omega"] for x in rnd], "x", color="tab:blue")
    front = records[0]["details"].get("pareto", [])
    if front:
        ax2.step([p["size_bytes"] / 1e3 for p in front], [p["omega"] for p in front], where="post", color="black",
                 lw=1, label="Pareto frontier (ΣΩ)")  # fmt: skip
    ax2.plot([_plan_size(r) / 1e3 for r in rs], [r["metrics"]["omega"] for r in rs], "o", color="tab:red",
             label="chosen plans")  # fmt: skip
    ax1.set_xlabel("storage of the Linear/Conv layers (kB)")
    ax1.set_ylabel(f"test {p} ({unit})")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("storage of the Linear/Conv layers (kB)")
    ax2.set_ylabel("total sensitivity ΣΩ (nats, log)")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
