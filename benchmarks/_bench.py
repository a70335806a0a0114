"""Shared benchmark plumbing: argument parsing, thread setup, table printing and the JSON schema
``{"benchmark", "machine", "rows", "goals": [{"what", "measured", "goal", "met"}]}``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA = Path(os.environ.get("CIMKIT_DATA", ROOT.parent / "shared" / "datasets"))


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=doc)
    p.add_argument("--quick", action="store_true", help="small smoke run (figures not comparable)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"JSON output (default benchmarks/results/{name}.json; --quick: {name}.quick.json)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a loaded machine)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="dataset folder")
    return p


def setup_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)


class Report:
    """Collects rows and goals, prints a table, writes the JSON atomically."""

    def __init__(self, name: str, quick: bool) -> None:
        from cimkit.utils import machine_info

        self.name, self.quick = name, quick
        self.machine = machine_info()
        self.rows: list[dict[str, Any]] = []
        self.goals: list[dict[str, Any]] = []

    def row(self, **fields: Any) -> None:
        self.rows.append(fields)

    def goal(self, what: str, measured: float, goal: str, met: bool) -> None:
        self.goals.append({"what": what, "measured": measured, "goal": goal, "met": bool(met)})

    def print(self) -> None:
        from cimkit.report.summary import format_table

        if self.rows:
            keys: list[str] = []
            for r in self.rows:
                keys += [k for k in r if k not in keys]
            fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
            sys.stdout.write(format_table(keys, [[fmt(r.get(k, "")) for k in keys] for r in self.rows]) + "\n\n")
        for g in self.goals:
            m = g["measured"]
            ms = f"{m:.4g}" if isinstance(m, float) else str(m)
            sys.stdout.write(f"[{'met' if g['met'] else 'NOT MET'}] {g['what']}: {ms} (goal {g['goal']})\n")

    def write(self, out: Path | None) -> Path:
        from cimkit.io import atomic_write_json

        # a --quick run never overwrites the full run's results (quick files are git-ignored)
        path = out or RESULTS / f"{self.name}{'.quick' if self.quick else ''}.json"
        atomic_write_json(path, {"benchmark": self.name, "quick": self.quick, "machine": self.machine,
                                 "rows": self.rows, "goals": self.goals})  # fmt: skip
        sys.stdout.write(f"\nwrote {path}\n")
        return path
