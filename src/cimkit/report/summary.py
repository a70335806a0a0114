"""The one-table summary of an experiment, shared by the CLI and the HTML report."""

from __future__ import annotations

from typing import Any

# metrics shown after the task's primary metric when a variant has them, in this order
_SHOWN = ("size_bytes", "bops", "energy_uj", "latency_us")


def _fmt(key: str, value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "fraction":
        return f"{100 * value:.2f}%"
    if unit == "bytes":
        return f"{value / 1024:.1f} KiB"
    if abs(value) >= 1e4:
        for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= div:
                return f"{value / div:.3g} {prefix} {unit}".strip()
    if isinstance(value, float):
        return f"{value:.4g} {unit}".strip()
    return f"{value} {unit}".strip()


def summary_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: variant, kind, the task's primary metric (with its std over chips or seeds
    when a variant has one), then the common cost metrics present in any variant."""
    variants = results.get("variants", [])
    p = str(results.get("task", {}).get("primary", "accuracy"))
    keys = [p, *(k for k in _SHOWN if any(k in v["metrics"] for v in variants))]
    std_cols = any(f"{p}_std" in v["metrics"] for v in variants)
    headers = ["variant", "kind", *keys] + ([f"{p} ± std"] if std_cols else []) + ["seconds"]
    rows = []
    for v in variants:
        m, u = v["metrics"], v.get("units", {})
        row = [v["name"], v["kind"], *(_fmt(k, m.get(k), u.get(k, "")) for k in keys)]
        if std_cols:
            sd = m.get(f"{p}_std")
            row.append("" if sd is None else "± " + _fmt(f"{p}_std", sd, u.get(f"{p}_std", "")).removesuffix("%"))
        row.append(f"{v.get('seconds', 0):.1f}")
        rows.append(row)
    return headers, rows


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain-text table for the terminal."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])
