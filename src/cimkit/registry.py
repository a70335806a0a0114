"""One small registry used for models, datasets, device presets, variant kinds, ...

Entries are registered with a name and a one-line description; names can be listed with
shell-style wildcards (``list("res*")``) and looked up with a did-you-mean error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from cimkit.errors import unknown

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its name, one-line description and free-form metadata."""

    name: str
    obj: T
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> object mapping with descriptions, wildcard listing and did-you-mean lookups."""

    def __init__(self, kind: str, loader: Callable[[], object] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._loader = loader  # run once before the first lookup (e.g. plugin discovery fills it)

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def register(
        self, name: str, description: str = "", **meta: Any
    ) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name", "what it is")``. Re-registering a name is an error."""

        def deco(obj: T) -> T:
            self.add(name, obj, description, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, description: str = "", **meta: Any) -> None:
        """Register ``obj`` under ``name`` (non-decorator form)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, obj, description, dict(meta))

    def get(self, name: str) -> T:
        """The object registered as ``name``; :class:`~cimkit.errors.ConfigError` if unknown."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        """The full :class:`Entry` for ``name``."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise unknown(self.kind, name, self._entries) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style wildcard pattern."""
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def describe(self, pattern: str = "*") -> list[tuple[str, str]]:
        """``(name, description)`` pairs matching ``pattern``."""
        return [(n, self._entries[n].description) for n in self.list(pattern)]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
