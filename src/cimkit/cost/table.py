"""The result of an estimate: per-layer rows, their totals, and the chip-level figures of merit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cimkit.cost.formulas import tops, tops_per_w
from cimkit.cost.record import ADDITIVE_FIELDS, AREA_COMPONENTS, ENERGY_COMPONENTS, LayerCost, area_field, energy_field
from cimkit.cost.specs import HardwareSpec
from cimkit.errors import CimkitError

__all__ = ["DEFAULT_COLUMNS", "CostTable"]

DEFAULT_COLUMNS = (
    "name", "type", "hardware", "w_bits", "a_bits", "macs", "tiles", "adc_conversions",
    *(energy_field(c) for c in ENERGY_COMPONENTS), "energy_uj", "latency_us", "area_mm2",
)  # fmt: skip

_SHORT = {energy_field(c): f"E_{c}" for c in ENERGY_COMPONENTS}
_SHORT.update({"energy_uj": "E (µJ)", "latency_us": "t (µs)", "area_mm2": "A (mm²)", "adc_conversions": "ADC conv",
               "w_bits": "W", "a_bits": "A", "hardware": "on"})  # fmt: skip


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if v == 0.0:
            return "0"
        return f"{v:.4g}"
    return str(v)


@dataclass
class CostTable:
    """Per-inference cost of a model on one spec: ``layers`` (one :class:`LayerCost` per priced
    module, plus ``(other)`` and ``(chip)``); :meth:`total` sums every additive field over them
    and adds TOPS/W, TOPS, TOPS/mm² and FPS (ops = 2 per MAC, layer-by-layer latency)."""

    layers: list[LayerCost]
    spec: HardwareSpec
    spec_name: str
    interconnect_mm: float = 0.0
    batch: int = 1

    def total(self) -> dict[str, float]:
        out: dict[str, float] = {f: sum(getattr(r, f) for r in self.layers) for f in ADDITIVE_FIELDS}
        e, t, a, macs = out["energy_uj"], out["latency_us"], out["area_mm2"], out["macs"]
        out["tops_w"] = tops_per_w(macs, e)
        out["tops"] = tops(macs, t)
        out["tops_mm2"] = out["tops"] / a if a > 0 else 0.0
        out["fps"] = 1e6 / t if t > 0 else 0.0
        return out

    @property
    def energy_uj(self) -> float:
        return sum(r.energy_uj for r in self.layers)

    @property
    def latency_us(self) -> float:
        return sum(r.latency_us for r in self.layers)

    @property
    def area_mm2(self) -> float:
        return sum(r.area_mm2 for r in self.layers)

    def layer(self, name: str) -> LayerCost:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(name)

    def components(self) -> dict[str, float]:
        """Energy per component (µJ) over the whole model."""
        return {c: sum(getattr(r, energy_field(c)) for r in self.layers) for c in ENERGY_COMPONENTS}

    def area_components(self) -> dict[str, float]:
        return {c: sum(getattr(r, area_field(c)) for r in self.layers) for c in AREA_COMPONENTS}

    def describe_hardware(self) -> dict[str, Any]:
        """What priced this estimate: the spec's name and kind, its ADC (CIM) and arithmetic models."""
        s = self.spec
        return {"spec": self.spec_name, "hardware": s.kind.value, "adc": s.adc if s.is_cim else None,
                "adc_bits": s.adc_bits if s.is_cim else None, "digital": s.digital, "dram": s.dram,
                "node_nm": s.node_nm}  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """Hardware, totals of energy/latency/area, figures of merit and the energy per component."""
        t = self.total()
        keep = ("energy_uj", "latency_us", "area_mm2", "tops_w", "tops", "tops_mm2", "fps", "macs", "size_bytes",
                "tiles", "arrays", "adc_conversions")  # fmt: skip
        return {**self.describe_hardware(), **{k: t[k] for k in keep},
                "energy_components_uj": self.components(), "area_components_mm2": self.area_components()}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: hardware, the spec's fields, every row and the total."""
        return {**self.describe_hardware(), "spec_config": self.spec.to_dict(),
                "interconnect_mm": self.interconnect_mm, "layers": [r.to_dict() for r in self.layers],
                "total": self.total()}  # fmt: skip

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (pandas is optional: not a cimkit dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise CimkitError("CostTable.to_pandas needs pandas (pip install pandas); use .to_dict() without it") from None
        return pd.DataFrame([r.to_dict() for r in self.layers])

    def rows(self, columns: tuple[str, ...] = DEFAULT_COLUMNS, *, with_total: bool = True) -> list[list[Any]]:
        out = [[getattr(r, c) for c in columns] for r in self.layers]
        if with_total:
            t = self.total()
            out.append([t.get(c, "total" if c == "name" else "") for c in columns])
        return out

    def format(self, columns: tuple[str, ...] = DEFAULT_COLUMNS) -> str:
        """A plain-text table of the rows and the total, with the hardware and figures of merit."""
        headers = [_SHORT.get(c, c) for c in columns]
        body = [["" if (c in ("w_bits", "a_bits") and v == 0) else _fmt(v) for c, v in zip(columns, row)]
                for row in self.rows(columns)]  # fmt: skip
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *body)]
        line = lambda r: "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
        t = self.total()
        hw = self.describe_hardware()
        head = (f"{self.spec_name} ({hw['hardware']}, {self.spec.node_nm:g} nm"
                + (f", ADC {hw['adc']} {hw['adc_bits']} b" if hw["adc"] else f", {hw['digital']}") + "): "
                f"{t['energy_uj']:.4g} µJ, {t['latency_us']:.4g} µs, {t['area_mm2']:.4g} mm² per inference; "
                f"{t['tops_w']:.4g} TOPS/W, {t['tops']:.4g} TOPS, {t['tops_mm2']:.4g} TOPS/mm²")  # fmt: skip
        return "\n".join([head, line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])

    def __str__(self) -> str:
        return self.format()
