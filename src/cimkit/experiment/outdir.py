"""The output folder of a run: checked before any work, locked while the run writes into it.

* ``--out`` naming an existing file, a folder that cannot be created or written, or a folder that
  holds the results of a *different* experiment is refused with a one-line ConfigError before any
  data is loaded or any model trained (re-running the same experiment into its folder resumes it);
* a lock file (``.cimkit.lock``, ``fcntl.flock``) makes a second run into the same folder fail at
  once instead of overwriting the first one's results. The lock is released when the run ends
  (also when it crashes: the operating system drops it with the process).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from cimkit.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".cimkit.lock"


def _os_reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def check_out_dir(out: Path, experiment: dict[str, Any]) -> None:
    """Refuse an output folder this run cannot use (module docstring); creates it if needed."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is an existing file, not a folder; pick a folder name")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create the output folder {out} ({_os_reason(e)})") from None
    probe = out / f".cimkit-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out: the output folder {out} is not writable ({_os_reason(e)})") from None
    res = out / "results.json"
    if res.is_file():
        try:
            old = json.loads(res.read_text(encoding="utf-8")).get("experiment")
        except (OSError, ValueError, AttributeError):
            old = None  # a damaged results file is simply rewritten
        if isinstance(old, dict) and old != experiment:
            raise ConfigError(
                f"--out: {out} holds the results of another experiment ('{old.get('name', '?')}'); pick another "
                f"--out or delete {res} to overwrite it"
            )


class OutDirLock:
    """An exclusive, non-blocking lock on an output folder (context manager)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self._f: IO[str] | None = None

    def __enter__(self) -> OutDirLock:
        if fcntl is None:  # pragma: no cover
            return self
        try:
            self._f = open(self.path, "a+", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"--out: cannot create the lock file {self.path} ({_os_reason(e)})") from None
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.close()
            self._f = None
            raise ConfigError(
                f"--out: another cimkit run is writing into {self.path.parent}; wait for it to finish or pick "
                f"another --out"
            ) from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(f"{os.getpid()}\n")
        self._f.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            self._f.close()
            self._f = None
