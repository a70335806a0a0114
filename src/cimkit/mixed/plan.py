"""BitPlan: a per-layer weight bit-width assignment, saved as JSON and applied through ``quantize_``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.io import atomic_write_text


@dataclass
class BitPlan(Config):
    """Weight bits per layer (plus the shared activation bits) and what the plan costs.

    ``layer_bits`` maps layer names (as in ``model.named_modules()``) to weight bits; layers not in
    it get ``default_bits``. The figures (``size_bytes`` of the planned layers (their storage by
    :func:`cimkit.cost.storage_bytes`), ``bops`` per sample, ``tiles``, total ``omega``, and in
    ``costs`` every other cost that was budgeted, e.g. ``energy_uj``) are recorded when the plan is
    made and are informative.
    """

    layer_bits: dict[str, int] = field(default_factory=dict)
    a_bits: int | None = 8
    default_bits: int = 8
    per_channel: bool = True
    w_symmetric: bool = True
    w_observer: str | None = None
    candidate_bits: list[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])
    method: str = "hessian-ilp"
    size_bytes: float = 0.0
    bops: float = 0.0
    tiles: float = 0.0
    omega: float = 0.0
    costs: dict[str, float] = field(default_factory=dict)
    budget: dict[str, float] = field(default_factory=dict)
    mean_trace: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, b in self.layer_bits.items():
            check_range(f"layer_bits.{name}", b, 1, 16)
        if self.a_bits is not None:
            check_range("a_bits", self.a_bits, 2, 16)
        check_range("default_bits", self.default_bits, 1, 16)

    # ------------------------------------------------------------------ conversion

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Per-layer ``QuantConfig.overrides`` entries (exact-name patterns) for this plan."""
        return {_exact_pattern(name): {"w_bits": int(b)} for name, b in self.layer_bits.items()}

    def to_quant_config(self, **fields: Any) -> Any:
        """A :class:`cimkit.quant.QuantConfig` with ``w_bits=default_bits`` and per-layer overrides.

        Extra ``fields`` (e.g. ``lsq=True``, ``observer="percentile"``) are passed through.
        """
        from cimkit.quant import QuantConfig

        base: dict[str, Any] = {
            "w_bits": self.default_bits,
            "a_bits": self.a_bits,
            "per_channel": self.per_channel,
            "w_symmetric": self.w_symmetric,
            "w_observer": self.w_observer,
        }
        base.update(fields)
        overrides = dict(base.pop("overrides", {}) or {})
        overrides.update(self.overrides())
        return QuantConfig.from_dict({**base, "overrides": overrides})

    def apply(self, model: nn.Module, calib: Any = None, **quant_fields: Any) -> nn.Module:
        """Quantize ``model`` in place with this plan (``quantize_``) and calibrate on ``calib``.

        ``calib``: a list of input tensors or an iterable of ``(x, y)`` batches (activation ranges).
        Unknown layer names are a ConfigError (the plan was made for another model).
        """
        from cimkit.quant import calibrate, quantize_

        known = {n for n, _ in model.named_modules()}
        missing = [n for n in self.layer_bits if n not in known]
        if missing:
            raise ConfigError(f"plan names layers the model does not have: {', '.join(missing[:5])}")
        quantize_(model, self.to_quant_config(**quant_fields))
        if calib is not None:
            calibrate(model, calib)
        return model

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON (atomically)."""
        return atomic_write_text(path, self.to_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BitPlan:
        """Read a plan written by :meth:`save`."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"bit plan file not found: {p}")
        return cls.from_json(p.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ views

    def rows(self) -> list[dict[str, Any]]:
        """One dict per planned layer: name, bits, mean trace (if recorded)."""
        return [{"layer": n, "w_bits": b, "mean_trace": self.mean_trace.get(n)} for n, b in self.layer_bits.items()]

    def average_bits(self, params: dict[str, int]) -> float:
        """Parameter-weighted mean weight bits over the planned layers."""
        tot = sum(params[n] for n in self.layer_bits)
        return sum(params[n] * b for n, b in self.layer_bits.items()) / max(tot, 1)

    def __str__(self) -> str:
        bits = ", ".join(f"{n}:{b}" for n, b in self.layer_bits.items())
        return f"BitPlan({bits}; a_bits={self.a_bits}; {self.size_bytes:.0f} B)"


def _exact_pattern(name: str) -> str:
    """An override pattern matching exactly ``name`` (glob specials escaped as character classes)."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def plan_from_choice(
    table: Any,
    choice: np.ndarray | list[int],
    *,
    a_bits: int | None = 8,
    method: str = "hessian-ilp",
    budget: dict[str, float] | None = None,
    tiles: np.ndarray | None = None,
    costs: dict[str, np.ndarray] | None = None,
) -> BitPlan:
    """A :class:`BitPlan` from candidate indices ``choice`` (L,) into a :class:`SensitivityTable`."""
    choice = np.asarray(choice, dtype=np.int64)
    idx = (np.arange(len(table.layers)), choice)
    return BitPlan(
        layer_bits={layer.name: int(table.bits[j]) for layer, j in zip(table.layers, choice)},
        a_bits=a_bits,
        per_channel=table.per_channel,
        w_symmetric=table.symmetric,
        w_observer=table.observer,
        candidate_bits=list(table.bits),
        method=method,
        size_bytes=float(table.size_bytes()[idx].sum()),
        bops=float(table.bops(a_bits)[idx].sum()),
        tiles=float(tiles[idx].sum()) if tiles is not None else 0.0,
        omega=float(table.omega[idx].sum()),
        costs={k: float(np.asarray(v)[idx].sum()) for k, v in (costs or {}).items()},
        budget={k: float(v) for k, v in (budget or {}).items()},
        mean_trace={layer.name: float(t) for layer, t in zip(table.layers, table.mean_trace)},
    )


def uniform_choice(table: Any, bits: int) -> np.ndarray:
    """(L,) candidate indices putting every layer at ``bits`` (must be a candidate)."""
    if bits not in table.bits:
        raise ConfigError(f"uniform bits {bits} is not a candidate; candidates: {table.bits}")
    return np.full(len(table.layers), table.bits.index(bits), dtype=np.int64)
