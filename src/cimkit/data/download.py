"""Data directory resolution, md5 verification and downloads (mirrors tried in order, atomic rename)."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cimkit.errors import DataError
from cimkit.utils import progress

log = logging.getLogger("cimkit.data")

ENV_VAR = "CIMKIT_DATA"
USER_AGENT = "cimkit (https://github.com/; dataset loader)"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name in the dataset folder, md5 and download URLs in order."""

    name: str
    md5: str
    urls: tuple[str, ...] = ()


def default_data_dir() -> Path:
    """The user cache dir: ``$XDG_CACHE_HOME/cimkit`` or ``~/.cache/cimkit``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "cimkit"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """(folder, where it came from): explicit argument, else ``$CIMKIT_DATA``, else the cache dir."""
    if data_dir is not None and str(data_dir) != "":
        p, how = Path(data_dir).expanduser(), "data_dir argument / --data-dir"
    elif os.environ.get(ENV_VAR):
        p, how = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        p, how = default_data_dir(), "default cache dir"
    if p.exists() and not p.is_dir():
        raise DataError(f"data folder {p} (from {how}) is a file, not a folder; point it at the folder that holds "
                        f"the datasets")  # fmt: skip
    return p, how


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_verified(path: Path, md5: str) -> bytes:
    """The bytes of ``path``, checked against ``md5`` (mismatch -> DataError with both sums)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    actual = md5_bytes(data)
    if actual != md5:
        raise DataError(
            f"checksum mismatch for {path}: md5 {actual}, expected {md5} ({len(data)} bytes; the file is "
            f"corrupt or truncated; delete it to download it again)"
        )
    return data


def _open_url(url: str, timeout: float) -> IO[bytes]:
    """Open ``url`` for reading (the one network call; tests replace it to simulate being offline)."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(req, timeout=timeout)  # official https/http sources


def _one_line(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    text = f"{type(e).__name__}: {reason if reason is not None else e}"
    return " ".join(text.split())


def download(rf: RemoteFile, dest_dir: Path, *, show_progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``rf`` into ``dest_dir`` trying its URLs in order; md5-verify, then rename into place.

    The file is streamed to a temp file next to its destination and only renamed once its md5
    matches, so a failed or interrupted download never leaves a partial file under the real name.
    Raises DataError (one line, every mirror's failure) when no URL gives the right bytes.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / rf.name
    errors: list[str] = []
    for url in rf.urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{rf.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            h = hashlib.md5(usedforsecurity=False)
            log.info("downloading %s", url)
            with os.fdopen(fd, "wb") as out, _open_url(url, timeout) as resp:
                size = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
                total_kb = int(size) // 1024 if size and size.isdigit() else None
                bar = progress(iter(()), total=total_kb, desc=rf.name, enabled=show_progress, unit="kB")
                done = 0
                try:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        kb = (done + len(chunk)) // 1024 - done // 1024
                        done += len(chunk)
                        bar.update(kb)
                finally:
                    bar.close()
            actual = h.hexdigest()
            if actual != rf.md5:
                errors.append(f"{url}: md5 {actual}, expected {rf.md5}")
                continue
            os.replace(tmp, dest)
            log.info("saved %s (%d bytes, md5 ok)", dest, done)
            return dest
        except (OSError, ValueError, urllib.error.URLError) as e:  # URLError/HTTPError/timeouts
            errors.append(f"{url}: {_one_line(e)}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DataError(f"could not download {rf.name}: " + "; ".join(errors or ["no download URL known"]))
