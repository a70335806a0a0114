"""Base class for flat, validated configuration dataclasses that round-trip to JSON and TOML.

Subclass it as a ``@dataclass``; validate ranges in ``__post_init__`` with the ``check_*``
helpers (they raise :class:`~cimkit.errors.ConfigError` naming field, value and what is allowed).
``from_dict`` rejects unknown keys with a did-you-mean hint and checks every value's type against
the field annotation, coercing ints to floats, strings to ``str, Enum`` members and dicts to
nested configs.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

from cimkit.errors import ConfigError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    """Base of all cimkit configs (see module docstring)."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], *, where: str = "") -> C:
        """Build and validate from a plain mapping; ``where`` prefixes field names in errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where or cls.__name__}: expected a table/mapping, got {data!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in fields:
                raise ConfigError(
                    f"{where}{key}: unknown key for {cls.__name__}{did_you_mean(key, fields)}; "
                    f"allowed: {', '.join(fields)}"
                )
            kwargs[key] = _coerce(hints[key], value, f"{where}{key}")
        try:
            return cls(**kwargs)
        except ConfigError as e:
            if where and not str(e).startswith(where):
                raise ConfigError(f"{where}{e}") from None
            raise
        except TypeError as e:  # missing required field
            raise ConfigError(f"{where or cls.__name__}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-able dict (enums as their values, nested configs as dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSON: {e}") from None
        return cls.from_dict(data)

    def to_toml(self) -> str:
        return dumps_toml(self.to_dict())

    @classmethod
    def from_toml(cls: type[C], text: str) -> C:
        return cls.from_dict(loads_toml(text))

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed."""
        return type(self).from_dict({**self.to_dict(), **{k: _plain(v) for k, v in changes.items()}})


# ----------------------------------------------------------------------------- validation helpers


def check_range(
    name: str,
    value: float,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise ConfigError unless lo <= value <= hi (open ends with ``lo_open``/``hi_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        lo_s = "-inf" if lo is None else f"{lo}"
        hi_s = "inf" if hi is None else f"{hi}"
        interval = f"{'(' if lo_open or lo is None else '['}{lo_s}, {hi_s}{')' if hi_open or hi is None else ']'}"
        raise ConfigError(f"{name}: {value!r} is out of range; allowed: {interval}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"{name}: {value!r} is not allowed{did_you_mean(str(value), map(str, choices))}; "
            f"allowed: {', '.join(map(str, choices))}"
        )


E = TypeVar("E", bound=enum.Enum)


def as_enum(name: str, value: Any, enum_cls: type[E]) -> E:
    """``enum_cls(value)``, or a ConfigError naming the field, the value and the allowed values."""
    return _coerce(enum_cls, value, name)


# ----------------------------------------------------------------------------- type coercion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{name}: {value!r} is not a valid {_type_name(tp)}")
    if origin is typing.Literal:
        check_choice(name, value, args)
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            allowed = [m.value for m in tp]
            raise ConfigError(
                f"{name}: {value!r} is not allowed{did_you_mean(str(value), map(str, allowed))}; "
                f"allowed: {', '.join(map(str, allowed))}"
            ) from None
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        return tp.from_dict(value, where=f"{name}.")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{name}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a table/mapping, got {value!r}")
        vt = args[1] if args else Any
        return {str(k): _coerce(vt, v, f"{name}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"{name}: {value!r} is out of range; allowed: 64-bit integers")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{name}: {value!r} is out of range; allowed: finite numbers") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def _plain(v: Any) -> Any:
    if isinstance(v, Config):
        return v.to_dict()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return v


# ----------------------------------------------------------------------------- TOML


def loads_toml(text: str) -> dict[str, Any]:
    """Parse TOML text; syntax errors become a one-line ConfigError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}") from None


def read_config_text(path: str | Path) -> str:
    """The text of a config file; a missing file, a folder, an unreadable or non-UTF-8 (binary) file
    is a one-line ConfigError."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder; give the path of a .toml experiment file")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start}: {e.reason}); is it a binary file?") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read and parse a TOML file (missing, binary or unreadable file -> ConfigError)."""
    return loads_toml(read_config_text(path))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {v!r} to TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def dumps_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """Write a dict as TOML: scalars first, then sub-tables and arrays of tables. ``None`` is skipped."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            tables.append((k, v))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
            tables.append((k, list(v)))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        full = f"{_prefix}{_toml_key(k)}"
        if isinstance(v, list):
            for item in v:
                out += f"\n[[{full}]]\n" + dumps_toml(item, f"{full}.")
        else:
            out += f"\n[{full}]\n" + dumps_toml(v, f"{full}.")
    return out
