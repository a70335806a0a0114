"""Command line: ``cimkit run [EXPERIMENT.toml]``, ``cimkit list TOPIC [PATTERN]``, ``cimkit config``, and
the subcommands concerns register (:data:`cimkit.plugins.COMMANDS`, e.g. ``cimkit cost``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cimkit.errors import CimkitError

log = logging.getLogger("cimkit")


def _listings() -> dict[str, Callable[[str], list[tuple[str, str]]]]:
    """Topic -> ``describe(pattern)`` for ``cimkit list``: what the plugins registered."""
    from cimkit.plugins import TOPICS, load_plugins

    load_plugins()
    return {t: TOPICS.get(t) for t in TOPICS}


def _cmd_list(args: argparse.Namespace) -> int:
    topics = _listings()
    if args.topic is None:
        for t in sorted(topics):
            sys.stdout.write(f"{t}\n")
        return 0
    if args.topic not in topics:
        from cimkit.errors import unknown

        raise unknown("list topic", args.topic, topics)
    rows = topics[args.topic](args.pattern)
    width = max((len(n) for n, _ in rows), default=0)
    for name, desc in rows:
        sys.stdout.write(f"{name.ljust(width)}  {desc}\n")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from cimkit.experiment import load_experiment

    sys.stdout.write(load_experiment(args.experiment).to_toml())
    return 0


def _relaunch_with_torchrun(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``cimkit run --nproc N ...`` outside torchrun: start torchrun with the same arguments."""
    import subprocess

    from cimkit.dist import torchrun_command

    rest, skip = [], False
    for a in argv:  # the same command line without the launcher's own flags
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint"):
            skip = "=" not in a
            continue
        rest.append(a)
    cmd = torchrun_command(args.nproc, rest, nnodes=args.nnodes, node_rank=args.node_rank,
                           rdzv_endpoint=args.rdzv_endpoint)  # fmt: skip
    log.info("starting %s", " ".join(cmd))
    return subprocess.call(cmd)


def _cmd_run(args: argparse.Namespace) -> int:
    from cimkit.experiment import load_experiment, run_experiment
    from cimkit.report.summary import format_table, summary_rows

    cfg = load_experiment(args.experiment)
    if args.device:
        cfg = cfg.replace(device=args.device)
    if args.threads:
        cfg = cfg.replace(threads=args.threads)  # the runner applies it (a flag beats the file)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    from cimkit.dist import DDPStrategy, torchrun_env

    if (args.nproc > 1 or args.nnodes > 1) and not torchrun_env():
        return _relaunch_with_torchrun(args, args.argv)
    strategy = None
    if torchrun_env() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        strategy = DDPStrategy(cfg.train.compression_config(), device=None if cfg.device == "auto" else cfg.device)
        strategy.setup()
    main_rank = strategy is None or strategy.is_main
    try:
        results = run_experiment(cfg, out, data_dir=args.data_dir, progress=not args.no_progress,
                                 retrain=args.retrain, strategy=strategy)  # fmt: skip
    finally:
        if strategy is not None:
            strategy.teardown()
    if not main_rank:
        return 0  # rank 0 prints the summary
    headers, rows = summary_rows(results)
    b = results["baseline"]
    trained = "reused cached baseline" if b.get("reused") else f"trained baseline in {b.get('train_seconds', 0):.1f} s"
    sys.stdout.write(f"\n{cfg.name}: {results['dataset']['name']} / {cfg.model} ({trained})\n")
    sys.stdout.write(format_table(headers, rows) + "\n")
    sys.stdout.write(f"\nresults: {out / 'results.json'}\nreport:  {out / 'report.html'}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    import cimkit

    p = argparse.ArgumentParser(prog="cimkit", description=cimkit.__doc__)
    p.add_argument("--version", action="version", version=f"cimkit {cimkit.__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--release-memory", action="store_true",
                   help="let the C allocator return freed memory at once (lower resident memory; large-tensor "
                        "work runs slower: see cimkit.utils.retain_freed_memory)")  # fmt: skip
    p.add_argument("--portable-numerics", action="store_true",
                   help="run with the CPU libraries pinned to code paths that Intel and AMD CPUs share, so that "
                        "results agree across them as far as measured (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE, "
                        "those not set already; about 15-20 %% slower; docs/reproducibility.md)")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run an experiment (default: the built-in digits demo)")
    r.add_argument("experiment", nargs="?", help="experiment TOML file; omitted: built-in default")
    r.add_argument("--out", help="output folder (default runs/<experiment name>)")
    r.add_argument("--data-dir", help="dataset folder (default $CIMKIT_DATA, else ~/.cache/cimkit)")
    r.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides the file)")
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    r.add_argument("--retrain", action="store_true", help="train the baseline even if a cached one exists")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--nproc", type=int, default=1,
                   help="train with DDP on this many processes (started through torchrun; gloo on CPU, NCCL on GPU)")
    r.add_argument("--nnodes", type=int, default=1, help="machines of a multi-node run (torchrun --nnodes)")
    r.add_argument("--node-rank", type=int, default=0, help="this machine's rank in a multi-node run")
    r.add_argument("--rdzv-endpoint", help="host:port of node 0 for a multi-node run (torchrun's c10d rendezvous)")
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="list registered models, datasets, variants, ...")
    ls.add_argument("topic", nargs="?", help="what to list (omit to see the topics)")
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'res*'")
    ls.set_defaults(func=_cmd_list)

    c = sub.add_parser("config", help="print an experiment's full config as TOML (default: the built-in one)")
    c.add_argument("experiment", nargs="?")
    c.set_defaults(func=_cmd_config)

    from cimkit.plugins import COMMANDS, load_plugins

    load_plugins()
    for name in COMMANDS:  # subcommands of the concerns (e.g. ``cimkit cost``)
        COMMANDS.get(name)(sub)
    return p


def _relaunch_portable(argv: Sequence[str]) -> int | None:
    """``--portable-numerics`` with a pinning variable missing from the environment: the same command
    in a new Python with them set (the libraries read them when they first run, which has happened
    here); None when they are all set already."""
    import subprocess

    from cimkit.utils import PORTABLE_NUMERICS

    missing = {k: v for k, v in PORTABLE_NUMERICS.items() if k not in os.environ}
    if not missing:
        return None
    log.info("restarting with %s", " ".join(f"{k}={v}" for k, v in missing.items()))
    return subprocess.call([sys.executable, "-m", "cimkit", *argv], env={**os.environ, **missing})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.portable_numerics and (code := _relaunch_portable(argv)) is not None:
        return code
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.release_memory:
        from cimkit.utils import retain_freed_memory

        retain_freed_memory()
    try:
        return int(args.func(args) or 0)
    except CimkitError as e:
        sys.stderr.write(f"cimkit: error: {e}\n")
        return 2
    except OSError as e:  # the file system said no (disk full, permissions, ...): one line, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        sys.stderr.write(f"cimkit: error: {e.strerror or type(e).__name__}{where}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\ncimkit: interrupted; run the same command again to resume from the last checkpoint\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
