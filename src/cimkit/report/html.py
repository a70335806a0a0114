"""HTML report writer. matplotlib (extra ``report``) draws the plots; without it the report has tables only."""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cimkit.io import atomic_write_text
from cimkit.report.summary import summary_rows

log = logging.getLogger(__name__)


@dataclass
class Section:
    """A titled block of the report; ``html`` is trusted markup built with the helpers here."""

    title: str
    html: str


def have_matplotlib() -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        return True
    except ImportError:
        return False


def figure_html(fig: Any, alt: str = "plot") -> str:
    """Embed a matplotlib figure as a base64 PNG ``<img>`` and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table_html(headers: list[str], rows: list[list[Any]]) -> str:
    """A simple escaped HTML table."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _baseline_section(results: dict[str, Any]) -> Section | None:
    hist = results.get("baseline", {}).get("history") or []
    if not hist or not have_matplotlib():
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ep = [h["epoch"] for h in hist]
    task = results.get("task", {})
    (l1,) = ax.plot(ep, [h["loss"] for h in hist], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"training loss ({task.get('units', {}).get('loss', 'nats')})")
    handles = [l1]
    key = f"train_{task.get('primary', 'accuracy')}"
    if key != "train_loss" and all(key in h for h in hist):
        ax2 = ax.twinx()
        label, scale, _ = metric_axis(results, task.get("primary", "accuracy"))
        (l2,) = ax2.plot(ep, [scale * h[key] for h in hist], "s--", color="tab:orange", label=f"train {label}")
        ax2.set_ylabel(f"train {label}")
        handles.append(l2)
    ax.set_title("baseline training")
    ax.legend(handles=handles, loc="center right", framealpha=0.9)
    b = results["baseline"]
    note = "reused from cache" if b.get("reused") else "trained in this run"
    text = f"<p>{len(hist)} epochs, {b.get('seconds_per_epoch', float('nan')):.2f} s/epoch ({note}).</p>"
    return Section("Baseline training", text + figure_html(fig, "training curve"))


def primary_metric(results: dict[str, Any]) -> str:
    """The task's primary metric of a results dict (``accuracy`` for results without a task)."""
    return str(results.get("task", {}).get("primary", "accuracy"))


def metric_axis(results: dict[str, Any], metric: str) -> tuple[str, float, str]:
    """``(axis label, scale, unit)`` for plotting ``metric``: fractions become percent."""
    unit = results.get("task", {}).get("units", {}).get(metric, "fraction" if metric == "accuracy" else "")
    if unit == "fraction":
        return f"{metric} (%)", 100.0, "%"
    return (f"{metric} ({unit})" if unit else metric), 1.0, unit


def _primary_section(results: dict[str, Any]) -> Section | None:
    vs = results.get("variants", [])
    p = primary_metric(results)
    vs = [v for v in vs if p in v["metrics"]]
    if not vs or not have_matplotlib():
        return None
    import matplotlib.pyplot as plt

    label, k, _ = metric_axis(results, p)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(vs) + 2), 3.2))
    val = [k * v["metrics"][p] for v in vs]
    err = [k * v["metrics"].get(f"{p}_std", 0.0) for v in vs]
    ax.bar(range(len(vs)), val, yerr=err, capsize=3, color="tab:blue")
    ax.set_xticks(range(len(vs)), [v["name"] for v in vs], rotation=30, ha="right")
    ax.set_ylabel(f"test {label}")
    if k == 100.0:
        lo = min(val) - max([*err, 0]) - 2
        ax.set_ylim(max(0.0, lo), 100)
    for i, a in enumerate(val):
        ax.text(i, a, f"{a:.4g}", ha="center", va="bottom", fontsize=8)
    return Section(f"{p.capitalize()} by variant", figure_html(fig, f"{p} by variant"))


def _size_section(results: dict[str, Any]) -> Section | None:
    """The primary metric vs model size over every variant that reports ``size_bytes`` (any kind)."""
    p = primary_metric(results)
    vs = [v for v in results.get("variants", []) if "size_bytes" in v["metrics"] and p in v["metrics"]]
    if len(vs) < 2 or not have_matplotlib():
        return None
    import matplotlib.pyplot as plt

    label, k, _ = metric_axis(results, p)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for kind in dict.fromkeys(v["kind"] for v in vs):
        pts = [v for v in vs if v["kind"] == kind]
        ax.scatter([v["metrics"]["size_bytes"] / 1024 for v in pts], [k * v["metrics"][p] for v in pts],
                   label=kind, s=30)  # fmt: skip
        for v in pts:
            ax.annotate(v["name"], (v["metrics"]["size_bytes"] / 1024, k * v["metrics"][p]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")  # fmt: skip
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("model size (KiB, log scale)")
    ax.set_ylabel(f"test {label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Section(f"{p.capitalize()} vs model size", figure_html(fig, f"{p} vs size"))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
code{background:#f5f5f5;padding:0 .2em}.meta{color:#666;font-size:.9em}"""


def render_report(results: dict[str, Any], sections: list[Section] | None = None) -> str:
    """The report page as a string: the summary, the shared plots, then ``sections`` (what the
    caller adds, e.g. each variant kind's own tables and plots)."""
    exp = results.get("experiment", {})
    title = f"cimkit report: {exp.get('name', 'experiment')}"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    ds, mdl, mach = results.get("dataset", {}), results.get("model", {}), results.get("machine", {})
    parts.append(
        f"<p class=meta>{html.escape(exp.get('description', ''))}<br>dataset <b>{html.escape(str(ds.get('name')))}</b> "
        f"({ds.get('n_train')} train / {ds.get('n_test')} test), model <b>{html.escape(str(mdl.get('name')))}</b> "
        f"({mdl.get('params', 0):,} parameters), seed {results.get('seed')}, cimkit {results.get('cimkit_version')}, "
        f"torch {html.escape(str(mach.get('torch')))}, {html.escape(str(mach.get('cpu', mach.get('processor'))))}, "
        f"created {html.escape(str(results.get('created')))}</p>"
    )
    if not results.get("complete", True):
        parts.append("<p><b>Incomplete run:</b> some variants did not finish.</p>")
    headers, rows = summary_rows(results)
    shown = [Section("Summary", table_html(headers, rows))]
    for s in (_primary_section(results), _size_section(results), _baseline_section(results)):
        if s is not None:
            shown.append(s)
    shown.extend(sections or [])
    if not have_matplotlib():
        shown.append(Section("Plots", "<p>Install the <code>report</code> extra (matplotlib) for plots.</p>"))
    for s in shown:
        parts.append(f"<h2>{html.escape(s.title)}</h2>\n{s.html}")
    body = "\n".join(parts)
    return f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>" \
           f"<style>{_CSS}</style></head><body>{body}</body></html>\n"  # fmt: skip


def write_report(results: dict[str, Any], path: str | Path, sections: list[Section] | None = None) -> Path:
    """Render and write the report atomically (``sections`` as in :func:`render_report`)."""
    return atomic_write_text(path, render_report(results, sections))
