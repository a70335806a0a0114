"""One layer walk for every concern: select layers, resolve per-layer settings, swap modules.

* **Selection** (:func:`select`): leaf layers by type with ``isinstance`` (so an already
  transformed layer — a quantized ``nn.Linear`` subclass, a layer with a ``torch.nn.utils.parametrize``
  parametrization, an analog layer built on top of either — is still found), by name pattern and by
  ``filter_fn(name, module)``. :func:`base_type` says which plain type a transformed layer stands for.
* **Name patterns** (:func:`matches`): an exact qualified name, a shell-style glob (``features.*``,
  ``*.attn.q``) or the aliases ``@first`` / ``@last`` for the first / last candidate layer (in
  ``named_modules`` order, which is the forward order of Sequential-style models).
* **Rule tables** (:class:`Rules`): an ordered ``pattern -> {field: value}`` table, applied in order
  to a base config (like torchao's ``FqnToConfig``); every concern's per-layer settings use it.
* **Swapping** (:func:`set_module`).

The candidate types are those registered with :func:`register_weighted_type` (``nn.Linear``,
``nn.Conv1d``, ``nn.Conv2d`` by default; a package can add its own weighted layer types).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from cimkit.errors import ConfigError, did_you_mean

__all__ = [
    "FIRST",
    "LAST",
    "FilterFn",
    "LayerRef",
    "Rules",
    "base_type",
    "matches",
    "register_weighted_type",
    "select",
    "set_module",
    "weighted_types",
]

FIRST, LAST = "@first", "@last"
FilterFn = Callable[[str, nn.Module], bool]
C = TypeVar("C")

_WEIGHTED: list[type[nn.Module]] = [nn.Linear, nn.Conv1d, nn.Conv2d]


def register_weighted_type(cls: type[nn.Module]) -> type[nn.Module]:
    """Make ``cls`` a candidate of the default selection (usable as a class decorator)."""
    if cls not in _WEIGHTED:
        _WEIGHTED.append(cls)
    return cls


def weighted_types() -> tuple[type[nn.Module], ...]:
    """The layer types selected by default (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ...)."""
    return tuple(_WEIGHTED)


def base_type(module: nn.Module) -> type[nn.Module]:
    """The registered plain layer type ``module`` is an instance of (``nn.Linear`` for a
    ``QuantLinear`` or an analog linear layer), or ``type(module)`` if none."""
    for cls in type(module).__mro__:
        if cls in _WEIGHTED:
            return cls
    return type(module)


@dataclass(frozen=True)
class LayerRef:
    """A selected layer: its qualified ``name``, the ``module``, and its ``index`` among the
    ``count`` candidate layers (before name/filter selection, so ``@first`` is always the first
    candidate of the model)."""

    name: str
    module: nn.Module
    index: int
    count: int


def matches(pattern: str, ref: LayerRef) -> bool:
    """Whether ``pattern`` (exact name, glob, ``@first``, ``@last``) names ``ref``."""
    if pattern == FIRST:
        return ref.index == 0
    if pattern == LAST:
        return ref.index == ref.count - 1
    return fnmatch.fnmatchcase(ref.name, pattern)


def select(
    model: nn.Module,
    types: type[nn.Module] | Sequence[type[nn.Module]] | None = None,
    *,
    include: Iterable[str] = ("*",),
    skip: Iterable[str] = (),
    filter_fn: FilterFn | None = None,
    exclude_types: type[nn.Module] | Sequence[type[nn.Module]] = (),
) -> list[LayerRef]:
    """The layers of ``model`` that are instances of ``types`` (default :func:`weighted_types`)
    and not of ``exclude_types``, whose name matches a pattern of ``include`` and none of ``skip``,
    and for which ``filter_fn(name, module)`` is true; in ``named_modules`` order.

    Modules nested inside a selected layer (e.g. a quantizer inside a quantized layer) are not
    candidates themselves. The root module is a candidate only when it is itself such a layer.
    """
    ts = weighted_types() if types is None else (tuple(types) if isinstance(types, Sequence) else (types,))
    ex = tuple(exclude_types) if isinstance(exclude_types, Sequence) else (exclude_types,)
    cands: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p + ".") or p == "" for p in inside) and name:
            continue
        if isinstance(mod, ts) and not (ex and isinstance(mod, ex)):
            cands.append((name, mod))
            inside.append(name)
    refs = [LayerRef(n, m, i, len(cands)) for i, (n, m) in enumerate(cands)]
    inc, sk = list(include), list(skip)
    out = []
    for r in refs:
        if not any(matches(p, r) for p in inc) or any(matches(p, r) for p in sk):
            continue
        if filter_fn is not None and not filter_fn(r.name, r.module):
            continue
        out.append(r)
    return out


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule ``name`` (dotted path) of ``model`` by ``new``."""
    if not name:
        raise ConfigError("set_module: cannot replace the root module in place; use the returned module")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class Rules:
    """An ordered table ``pattern -> {field: value}`` of per-layer settings.

    ``Rules({"@first": {"w_bits": 8}, "features.*": {"adc_bits": 6}})``. For a layer, every
    matching entry is applied in table order (later entries win). ``allowed`` restricts the field
    names (checked on construction, with a did-you-mean hint); ``where`` prefixes error messages.
    """

    def __init__(
        self,
        table: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        allowed: Iterable[str] | None = None,
        where: str = "overrides",
    ) -> None:
        table = dict(table or {})
        if not all(isinstance(k, str) for k in table):
            raise ConfigError(f"{where}: patterns must be strings, got {list(table)!r}")
        allowed_l = None if allowed is None else list(allowed)
        for pat, fields in table.items():
            if not isinstance(fields, Mapping):
                raise ConfigError(f"{where}.{pat}: expected a table of fields, got {fields!r}")
            for k in fields:
                if allowed_l is not None and k not in allowed_l:
                    raise ConfigError(
                        f"{where}.{pat}.{k}: not a per-layer field{did_you_mean(k, allowed_l)}; "
                        f"allowed: {', '.join(allowed_l)}"
                    )
        self.table = {p: dict(f) for p, f in table.items()}
        self.where = where

    def fields_for(self, ref: LayerRef) -> dict[str, Any]:
        """The merged fields of every entry naming ``ref`` (empty when none does)."""
        out: dict[str, Any] = {}
        for pat, fields in self.table.items():
            if matches(pat, ref):
                out.update(fields)
        return out

    def resolve(self, base: C, ref: LayerRef) -> C:
        """``base.replace(**fields_for(ref))`` for a :class:`~cimkit.config.Config` ``base``."""
        fields = self.fields_for(ref)
        return base.replace(**fields) if fields else base  # type: ignore[attr-defined]

    def __bool__(self) -> bool:
        return bool(self.table)

    def __repr__(self) -> str:
        return f"Rules({self.table!r})"
