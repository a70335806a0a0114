"""The error a failed distributed run raises in the launching process."""

from __future__ import annotations

from cimkit.errors import CimkitError

__all__ = ["DistributedError"]


class DistributedError(CimkitError, RuntimeError):
    """A rank failed, was killed or did not finish in time; ``errors`` maps rank -> its message."""

    def __init__(self, message: str, errors: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.errors: dict[int, str] = dict(errors or {})

    @property
    def rank(self) -> int | None:
        """The rank whose failure was seen first (None for a timeout)."""
        return next(iter(self.errors), None)
