"""Starting ranks: :func:`spawn` (local processes with a file rendezvous) and torchrun command lines.

:func:`spawn` runs ``fn(strategy, *args)`` in ``nproc`` new processes (forked from a
``forkserver`` that has imported torch once; ``start_method="spawn"`` for fully fresh ones), each with a set-up :class:`~cimkit.dist.strategy.DDPStrategy` on a ``FileStore`` in a temporary
directory (no network ports), and returns the ranks' return values. The first rank to fail (an
exception, a signal, an exit without a result) ends the run: the other ranks are terminated
(SIGTERM, then SIGKILL after ``kill_grace_s``) and :class:`~cimkit.dist.errors.DistributedError`
names the rank and carries its message and traceback (for a rank killed by a signal such as
SIGABRT or SIGSEGV, the Python stacks ``faulthandler`` wrote when it arrived). A run still going after ``timeout_s`` is
killed the same way. With ``on_failure="wait"`` the other ranks are left to end by themselves
(through the process group's own failure handling), which is how the tests check that a
surviving rank does not hang.

``fn`` must be importable by name (a module-level function) and its return value made of tensors,
numbers, strings, lists, tuples and dicts: results travel back as ``torch.save`` bytes and are
read with ``torch.load(weights_only=True)``, so nothing is unpickled.

For real jobs use torchrun (``python -m torch.distributed.run``): :func:`torchrun_command` builds the
command line (``--standalone`` on one node, or ``--nnodes/--node-rank/--rdzv-endpoint`` for several).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import connection, get_context
from typing import Any

import torch

from cimkit.config import check_choice, check_range
from cimkit.train.compression import CompressionConfig
from cimkit.dist.errors import DistributedError
from cimkit.dist.strategy import DDPStrategy
from cimkit.errors import ConfigError

__all__ = ["spawn", "torchrun_command"]

_RESULT, _ERROR = b"R", b"E"
# imported once by the fork server, so each rank starts in a fraction of a second. Not torch._dynamo
# (which the first DistributedDataParallel imports, seconds per rank): with it preloaded, forked
# ranks of torch 2.13 intermittently aborted at process-group teardown ("Resource deadlock avoided").
_PRELOAD = ("torch", "torch.distributed", "cimkit.dist")


def _child(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    rank: int,
    nproc: int,
    store: str,
    conn: Any,
    threads: int,
    strategy_kw: dict[str, Any],
) -> None:
    code = 0
    crash = open(_crash_log(store, rank), "w")  # noqa: SIM115 (must stay open until os._exit)
    faulthandler.enable(file=crash, all_threads=True)  # Python stacks if a signal (SIGABRT, SIGSEGV) kills the rank
    try:
        torch.set_num_threads(threads)
        strategy = DDPStrategy(init_method=f"file://{store}", rank=rank, world_size=nproc, **strategy_kw).setup()
        result = fn(strategy, *args)
        strategy.teardown()  # on failure the process just exits: that is what tells its peers
        buf = io.BytesIO()
        torch.save(result, buf)
        conn.send_bytes(_RESULT + buf.getvalue())
    except BaseException as e:  # report everything, including KeyboardInterrupt/SystemExit
        code = 1
        msg = f"{type(e).__name__}: {e}\n{''.join(traceback.format_exception(e))}"
        with contextlib.suppress(OSError):
            conn.send_bytes(_ERROR + msg.encode("utf-8", "replace"))
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip interpreter teardown: a dead peer must not keep this process alive


def _crash_log(store: str, rank: int) -> str:
    return os.path.join(os.path.dirname(store), f"rank{rank}.crash")


def _crash_text(store: str, rank: int, max_lines: int = 60) -> str:
    try:
        with open(_crash_log(store, rank)) as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    return ("\nPython stacks when the signal arrived:\n" + "\n".join(lines[:max_lines])) if lines else ""


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code} without a result"


def _stop(procs: Sequence[Any], grace_s: float) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    end = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5.0)


def spawn(
    fn: Callable[..., Any],
    nproc: int = 2,
    args: Sequence[Any] = (),
    *,
    compression: CompressionConfig | None = None,
    timeout_s: float = 300.0,
    pg_timeout_s: float = 60.0,
    threads: int = 1,
    on_failure: str = "terminate",
    kill_grace_s: float = 5.0,
    start_method: str = "forkserver",
    preload: Sequence[str] = _PRELOAD,
    **strategy_kw: Any,
) -> list[Any]:
    """Run ``fn(strategy, *args)`` on ``nproc`` local ranks; the list of their results by rank.

    ``pg_timeout_s`` is the process-group timeout of each rank's :class:`DDPStrategy`;
    ``timeout_s`` bounds the whole run. Further keywords go to :class:`DDPStrategy`
    (e.g. ``backend``, ``bucket_cap_mb``). Raises :class:`DistributedError` on any failure.
    """
    check_range("nproc", nproc, 1)
    check_range("timeout_s", timeout_s, 0.0, lo_open=True)
    check_range("threads", threads, 1)
    check_choice("on_failure", on_failure, ("terminate", "wait"))
    ctx = get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(list(preload))
    tmp = tempfile.mkdtemp(prefix="cimkit-dist-")
    store = os.path.join(tmp, "store")
    skw = {"compression": compression, "timeout_s": pg_timeout_s, **strategy_kw}
    procs, conns = [], []
    try:
        for r in range(nproc):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, args=(fn, tuple(args), r, nproc, store, send, threads, skw),
                            name=f"cimkit-rank{r}", daemon=True)  # fmt: skip
            p.start()
            send.close()
            procs.append(p)
            conns.append(recv)
        return _collect(procs, conns, timeout_s, on_failure, kill_grace_s, store)
    finally:
        _stop(procs, kill_grace_s)
        for c in conns:
            c.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _collect(
    procs: list[Any], conns: list[Any], timeout_s: float, on_failure: str, grace_s: float, store: str
) -> list[Any]:
    n = len(procs)
    results: list[Any] = [None] * n
    errors: dict[int, str] = {}  # in the order failures were seen
    pending = set(range(n))
    deadline = time.monotonic() + timeout_s
    while pending and not (errors and on_failure == "terminate"):
        left = deadline - time.monotonic()
        if left <= 0:
            _stop(procs, grace_s)
            raise DistributedError(
                f"spawn: rank(s) {sorted(pending)} still running after {timeout_s:g} s; all ranks were killed"
                + (f"; earlier failures: {_summary(errors)}" if errors else ""),
                errors,
            )
        waitables = [conns[r] for r in pending] + [procs[r].sentinel for r in pending]
        ready = set(connection.wait(waitables, timeout=left))
        for r in sorted(pending):
            if conns[r] not in ready and procs[r].sentinel not in ready:
                continue
            msg = None
            if conns[r].poll():
                try:
                    msg = conns[r].recv_bytes()
                except (EOFError, OSError):
                    msg = None
            if msg is None and procs[r].is_alive():
                procs[r].join(grace_s)  # pipe closed: the exit code follows
            if msg is not None and msg[:1] == _RESULT:
                results[r] = torch.load(io.BytesIO(msg[1:]), weights_only=True)
            elif msg is not None:
                errors[r] = msg[1:].decode("utf-8", "replace")
            else:
                errors[r] = f"rank {r} {_exit_text(procs[r].exitcode)}{_crash_text(store, r)}"
            pending.discard(r)
    if errors:
        first = next(iter(errors))
        raise DistributedError(f"rank {first} failed: {_summary(errors)}", errors)
    return results


def _summary(errors: dict[int, str]) -> str:
    parts = []
    for i, (r, msg) in enumerate(errors.items()):
        head = msg if i == 0 else msg.splitlines()[0] if msg else ""
        parts.append(head if i == 0 else f"(rank {r} also failed: {head})")
    return "\n".join(parts)


def torchrun_command(
    nproc: int,
    argv: Sequence[str],
    *,
    module: str | None = "cimkit",
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    python: str | None = None,
) -> list[str]:
    """The torchrun command line that runs ``python -m <module> <argv>`` (or the script ``argv[0]``) on ``nproc`` ranks.

    One node: ``--standalone`` (a local rendezvous on a free port). Several nodes: ``--nnodes``,
    ``--node-rank`` and ``--rdzv-endpoint host:port`` (the c10d rendezvous), run on every node.
    torchrun ends the job when any worker fails and reports that worker's exit code and error.
    """
    check_range("nproc", nproc, 1)
    check_range("nnodes", nnodes, 1)
    cmd = [python or sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ConfigError("rdzv_endpoint: None is not allowed with nnodes > 1; allowed: 'host:port' of node 0")
        cmd += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    if module is not None:
        cmd += ["-m", module]
    return cmd + list(argv)
