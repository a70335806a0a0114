"""Shared benchmark plumbing: arguments, data folder, threads, one interleaved timer, the users'
experiment runner, and the report (table + JSON).

Every benchmark prints a table and writes ``benchmarks/results/NAME.json``::

    {"benchmark", "quick", "machine", "config"?, "rows", "goals": [{"what", "measured", "goal", "met"}]}

A ``--quick`` run writes ``NAME.quick.json`` instead (git-ignored), so it never overwrites a full
run's results. Accuracy figures come from :func:`run_experiment`, i.e. from
:func:`cimkit.experiment.run_experiment` with the variant kinds users put in their experiment files
(``fp32``, ``ptq``, ``qat``, ``analog``, ``pipeline``); only timings and peer comparisons (Brevitas,
aihwkit) have code of their own here.

Data folder (``--data-dir``): the argument, else ``$CIMKIT_DATA``, else ``../shared/datasets`` next
to the repository when it exists, else cimkit's default cache folder.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "bench"  # the experiment folders of the benchmarks (git-ignored)
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "datasets"


# ----------------------------------------------------------------------------- arguments


def default_data_dir() -> Path | None:
    """``$CIMKIT_DATA``, else ``../shared/datasets`` when it exists, else None (cimkit's cache folder)."""
    env = os.environ.get("CIMKIT_DATA")
    if env:
        return Path(env)
    return SHARED_DATA if SHARED_DATA.is_dir() else None


def data_dir(arg: str | Path | None) -> Path | None:
    """The one data-folder rule of the benchmarks: ``--data-dir``, else :func:`default_data_dir`."""
    return Path(arg) if arg else default_data_dir()


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The common arguments: ``--quick``, ``--out``, ``--threads``, ``--data-dir``, ``--reuse``."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="small smoke run (figures not comparable)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON output (default benchmarks/results/{name}.json; --quick: {name}.quick.json)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a loaded machine)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="dataset folder (default: $CIMKIT_DATA, else ../shared/datasets, else cimkit's cache)",
    )
    p.add_argument("--release-memory", action="store_true",
                   help="glibc's default allocator behaviour instead of the cimkit commands' (which keep freed "
                        "memory mapped: cimkit.utils.retain_freed_memory)")  # fmt: skip
    p.add_argument("--reuse", action="store_true",
                   help="reuse the models an earlier run of the same experiment trained (runs/bench/NAME); "
                        "training times are then that run's")  # fmt: skip
    return p


def setup_threads(n: int) -> None:
    """Pin torch (and OpenMP) to ``n`` threads."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)


def setup(args: argparse.Namespace) -> None:
    """Threads (``--threads``) and, before any work, the allocator the ``cimkit`` commands use
    (``--release-memory``: glibc's default); results record it (``machine.allocator``)."""
    setup_threads(args.threads)
    if not getattr(args, "release_memory", False):
        from cimkit.utils import retain_freed_memory

        retain_freed_memory()


# ----------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Median seconds per call: ``cpu`` (process CPU time, the compute a call costs) and ``wall``
    (also counts waiting for a core on a loaded machine)."""

    cpu: float
    wall: float


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1, seed: int = 0
) -> dict[str, Timing]:
    """Median CPU and wall seconds per call of every function.

    Each function is first called ``warmup`` times (caches, allocator, lazy init); then every round
    calls each function once, in an order shuffled anew each round (seeded), so a change of machine
    load over the run affects all of them alike and none always runs first or last.
    """
    if rounds < 1:
        raise ValueError(f"rounds: {rounds} is out of range; allowed: >= 1")
    for f in fns.values():
        for _ in range(warmup):
            f()
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            c0, w0 = time.process_time(), time.perf_counter()
            fns[k]()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    return {k: Timing(statistics.median(cpu[k]), statistics.median(wall[k])) for k in fns}


# ----------------------------------------------------------------------------- the users' runner


def run_dir(name: str, quick: bool = False) -> Path:
    """The experiment folder of benchmark run ``name``: ``runs/bench/<name>`` (``.quick`` appended)."""
    return RUNS / f"{name}{'.quick' if quick else ''}"


def run_experiment(
    name: str,
    cfg: Any,
    *,
    data_dir: str | Path | None = None,
    quick: bool = False,
    reuse: bool = False,
) -> dict[str, Any]:
    """Run an experiment the way ``cimkit run`` does and return its ``results.json`` as a dict.

    ``cfg`` is a :class:`cimkit.experiment.ExperimentConfig` or the dict of one (the TOML file's
    tables). The folder is :func:`run_dir`; unless ``reuse``, it is emptied first, so every figure
    (training times included) is measured by this run rather than taken from a cached model.
    """
    from cimkit.experiment import ExperimentConfig
    from cimkit.experiment import run_experiment as _run

    if not isinstance(cfg, ExperimentConfig):
        cfg = ExperimentConfig.from_dict(dict(cfg))
    out = run_dir(name, quick)
    if not reuse and out.exists():
        if RUNS.resolve() not in out.resolve().parents:  # never delete anything outside runs/bench
            raise RuntimeError(f"refusing to delete {out}: not under {RUNS}")
        shutil.rmtree(out)
    return _run(cfg, out, data_dir=data_dir, progress=False)


def recipe(path: str | Path = EXAMPLES / "mnist_lenet5.toml", **changes: Any) -> dict[str, Any]:
    """An experiment file as a dict (to build a benchmark's experiment from), with top-level
    ``changes`` applied; ``train`` may be a dict of changes to the ``[train]`` table."""
    from cimkit.experiment import load_experiment

    d = load_experiment(str(path)).to_dict()
    train = changes.pop("train", None)
    d.update(changes)
    if train:
        d["train"] = {**d["train"], **train}
    return d


def variants(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``results.json``'s variant records by name."""
    return {v["name"]: v for v in results["variants"]}


def trained_baseline(results: Mapping[str, Any], name: str, quick: bool = False,
                     data_dir: str | Path | None = None) -> Any:  # fmt: skip
    """The trained fp32 model of a :func:`run_experiment` run (the runner's cached baseline), in
    eval mode; for timings and peer comparisons, which need the weights and not just the figures."""
    from cimkit.data import load_dataset
    from cimkit.experiment import ExperimentConfig
    from cimkit.experiment.runner import build_model
    from cimkit.train import load_model

    cfg = ExperimentConfig.from_dict(results["experiment"])
    data = load_dataset(cfg.dataset, data_dir=data_dir, progress=False, **cfg.dataset_args)
    model = build_model(cfg, data)
    load_model(run_dir(name, quick) / "cache" / f"baseline-{results['baseline']['key']}.safetensors", model)
    return model.eval()


def finetuned_state(name: str, quick: bool, tag: str) -> dict[str, Any]:
    """The model state dict a variant fine-tuned (its last checkpoint in the run's cache; ``tag`` as
    the variant kind names it, e.g. ``analog-<variant name>``), keyed like the model's own."""
    from cimkit.io import load_safetensors

    pattern = str(run_dir(name, quick) / "cache" / f"{glob.escape(tag)}-*" / "state.safetensors")
    found = sorted(glob.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"expected one checkpoint {pattern}, found {len(found)}")
    tensors, _ = load_safetensors(found[0])
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


# ----------------------------------------------------------------------------- report


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)


class Report:
    """Collects rows and goals, prints a table, writes the JSON atomically."""

    def __init__(self, name: str, quick: bool) -> None:
        from cimkit.utils import machine_info

        self.name, self.quick = name, quick
        self.machine = machine_info()
        self.config: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.goals: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def row(self, **fields: Any) -> None:
        self.rows.append(fields)

    def goal(self, what: str, measured: float, goal: str, met: bool) -> None:
        self.goals.append({"what": what, "measured": measured, "goal": goal, "met": bool(met)})

    def at_most(self, what: str, measured: float, limit: float, shown: str | None = None) -> None:
        """Goal ``measured <= limit`` (``shown``: the goal's text, default ``<= limit``)."""
        self.goal(what, measured, shown or f"<= {limit:g}", measured <= limit)

    def at_least(self, what: str, measured: float, limit: float, shown: str | None = None) -> None:
        """Goal ``measured >= limit``."""
        self.goal(what, measured, shown or f">= {limit:g}", measured >= limit)

    def skip(self, why: str) -> None:
        """Say why a part did not run (printed, and kept in the JSON's ``skipped``)."""
        self.notes.append(why)
        sys.stdout.write(f"skipped: {why}\n")

    def print(self) -> None:
        from cimkit.report.summary import format_table

        if self.rows:
            keys: list[str] = []
            for r in self.rows:
                keys += [k for k in r if k not in keys]
            sys.stdout.write(format_table(keys, [[_fmt(r.get(k)) for k in keys] for r in self.rows]) + "\n\n")
        for g in self.goals:
            sys.stdout.write(f"[{'met' if g['met'] else 'NOT MET'}] {g['what']}: {_fmt(g['measured'])} "
                             f"(goal {g['goal']})\n")  # fmt: skip

    def path(self, out: Path | None = None) -> Path:
        """``out``, else ``benchmarks/results/NAME.json`` (``NAME.quick.json`` for a quick run)."""
        return out or RESULTS / f"{self.name}{'.quick' if self.quick else ''}.json"

    def write(self, out: Path | None = None) -> Path:
        from cimkit.io import atomic_write_json

        path = self.path(out)
        doc: dict[str, Any] = {"benchmark": self.name, "quick": self.quick, "machine": self.machine}
        if self.config:
            doc["config"] = self.config
        if self.notes:
            doc["skipped"] = self.notes
        doc.update(rows=self.rows, goals=self.goals)
        atomic_write_json(path, doc)
        sys.stdout.write(f"\nwrote {path}\n")
        return path


if __name__ == "__main__":  # `make bench` runs every benchmarks/*.py; this one is a library
    sys.exit(0)


def main(p: argparse.ArgumentParser, run: Any, argv: list[str] | None = None) -> int:
    """The benchmarks' common entry point: parse ``argv`` with ``p``, set the torch threads, log at
    INFO (cimkit's own loggers at WARNING), ``run(args)`` -> :class:`Report`, print it and write its JSON."""
    args = p.parse_args(argv)
    setup(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("cimkit").setLevel(logging.WARNING)
    report = run(args)
    report.print()
    report.write(args.out)
    return 0
