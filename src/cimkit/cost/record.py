"""The per-layer cost record: what one layer does per inference and what that costs.

One :class:`LayerCost` per priced module (a Linear/Conv layer, quantized or analog or not, an
elementwise leaf such as BatchNorm or ReLU, an activation x activation product such as attention's
``q kᵀ`` and ``·v``), plus ``(other)`` for parameters outside any priced module and ``(chip)`` for
what the whole chip shares (global buffer, digital PE array, model input/output DRAM traffic).
A model's total is the sum of its rows, so every additive field sums to the total (tested).

Per inference = per example of the example input: one image, one token sequence of length ``T``.

Units: counts are per inference; energies in µJ (``energy_<component>_uj``), latency in µs (layer
by layer, no pipelining across layers), areas in mm² (``area_<component>_mm2``), sizes in bytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ADDITIVE_FIELDS", "AREA_COMPONENTS", "AREA_FIELDS", "ENERGY_COMPONENTS", "ENERGY_FIELDS", "CrossbarMap", "LayerCost", "area_field",
    "energy_field", "field_unit",
]  # fmt: skip

# energy split (NeuroSim V1.4's categories, with the DAC and DRAM apart: round2 anchors §1.7)
ENERGY_COMPONENTS = ("array", "adc", "dac", "accumulation", "digital", "buffer", "interconnect", "dram")
# area split the same way (interconnect wires and DRAM are not on-die area here)
AREA_COMPONENTS = ("array", "adc", "dac", "accumulation", "digital", "buffer")


def energy_field(component: str) -> str:
    """``energy_<component>_uj``."""
    return f"energy_{component}_uj"


def area_field(component: str) -> str:
    """``area_<component>_mm2``."""
    return f"area_{component}_mm2"


ENERGY_FIELDS = tuple(energy_field(c) for c in ENERGY_COMPONENTS)
AREA_FIELDS = tuple(area_field(c) for c in AREA_COMPONENTS)


@dataclass
class CrossbarMap:
    """How a layer sits on crossbar arrays (filled by the analog handler from the layer's own
    mapping and geometry, or by the spec for a digital layer priced as if mapped).

    ``geometry``: a :class:`cimkit.analog.TileGeometry`; ``slices``: cells per weight device
    (bit slicing); ``devices``: 2 for a differential pair, 1 for the offset mapping; ``planes``:
    input cycles per conversion batch (input bits when bit-serial, else 1); ``dac_bits`` /
    ``adc_bits``: converter resolutions (``dac_bits`` per drive: 1 when bit-serial); ``bit_serial``:
    inputs applied one bit per cycle; ``occupancy``: ``(T, n_blk)`` bool of the arrays that hold a
    nonzero weight (None: all)."""

    geometry: Any
    slices: int
    devices: int
    planes: int
    dac_bits: int
    adc_bits: int
    bit_serial: bool = False
    occupancy: Any = None
    source: str = "spec"  # "layer": the analog layer's own mapping; "spec": the spec's mapping


@dataclass
class LayerCost:
    """One priced module (see the module docstring). Counts are per inference."""

    name: str
    type: str  # the module's class name
    op: str  # "linear" | "conv" | "matmul" | "elementwise" | "lookup" | "none" | "chip"
    hardware: str = "digital"  # "cim" (on crossbars) | "digital" | "none"
    calls: int = 0  # forward calls per inference
    # --------------------------------------------------------------- workload
    macs: int = 0  # multiply-accumulates
    digital_ops: int = 0  # other digital operations (adds, compares, exponentials)
    params: int = 0  # parameters of this module (quantizer step sizes excluded)
    weights: int = 0  # Linear/Conv weight elements
    nnz_weights: int = 0  # nonzero weights (after a sparsity mask; = weights without one)
    w_bits: int = 0  # weight bits (32: float)
    a_bits: int = 0  # input activation bits (32: float)
    size_bytes: float = 0.0  # storage: weights, scales, zero points, bias, activation grid, other values
    bops: int = 0  # bit operations: macs · w_bits · a_bits
    in_elements: int = 0  # input activation elements
    out_elements: int = 0  # output activation elements
    positions: int = 0  # output positions (conv pixels, tokens): vectors through the layer
    weight_shape: tuple[int, ...] = ()
    fan_in: int = 0  # inputs summed per output (crossbar rows)
    # --------------------------------------------------------------- crossbar geometry (CIM)
    row_tiles: int = 0
    col_blocks: int = 0
    slices: int = 0
    devices: int = 0
    planes: int = 0
    tiles: int = 0  # row tiles x column blocks x slices (weight tiles; a differential tile is 2 arrays)
    arrays: int = 0  # physical tile_rows x tile_cols arrays that hold weights (occupied ones)
    rows_used: int = 0  # rows holding weights, summed over row tiles
    cols_used: int = 0  # outputs (columns per slice and device)
    utilisation: float = 0.0  # cells holding weights / cells of the occupied arrays
    dac_bits: int = 0
    adc_bits: int = 0
    # --------------------------------------------------------------- events per inference
    cell_reads: int = 0  # cells on activated rows of converted columns, per input cycle
    dac_conversions: int = 0  # word-line drives: rows x input cycles x positions (per row tile)
    adc_conversions: int = 0  # as the simulator converts: planes x positions x row groups x slices x outputs
    shift_adds: int = 0  # shift-and-add operations combining planes and slices (one per conversion)
    accum_adds: int = 0  # adds of partial sums across row tiles / row groups
    buffer_bits: int = 0  # on-chip buffer traffic (bits read + written)
    interconnect_bits: int = 0  # bits moved between tiles / PEs and buffers
    dram_bits: int = 0  # off-chip DRAM traffic
    # --------------------------------------------------------------- priced (see cimkit.cost.estimate)
    energy_array_uj: float = 0.0
    energy_adc_uj: float = 0.0
    energy_dac_uj: float = 0.0
    energy_accumulation_uj: float = 0.0
    energy_digital_uj: float = 0.0
    energy_buffer_uj: float = 0.0
    energy_interconnect_uj: float = 0.0
    energy_dram_uj: float = 0.0
    energy_uj: float = 0.0
    latency_us: float = 0.0
    area_array_mm2: float = 0.0
    area_adc_mm2: float = 0.0
    area_dac_mm2: float = 0.0
    area_accumulation_mm2: float = 0.0
    area_digital_mm2: float = 0.0
    area_buffer_mm2: float = 0.0
    area_mm2: float = 0.0
    # not serialized: how the layer maps onto crossbars (set by handlers)
    crossbar: CrossbarMap | None = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (the crossbar map and extras are left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("crossbar", "extra")}
        out["weight_shape"] = list(self.weight_shape)
        return out

    def total_energy(self) -> float:
        """Σ of the energy components (µJ)."""
        d = self.__dict__
        return sum(d[f] for f in ENERGY_FIELDS)

    def total_area(self) -> float:
        """Σ of the area components (mm²)."""
        d = self.__dict__
        return sum(d[f] for f in AREA_FIELDS)


# fields that add up over layers (a budget of mixed precision may name any of them)
ADDITIVE_FIELDS: tuple[str, ...] = (
    "macs", "digital_ops", "params", "weights", "nnz_weights", "size_bytes", "bops", "tiles", "arrays",
    "rows_used", "cell_reads", "dac_conversions", "adc_conversions", "shift_adds", "accum_adds", "buffer_bits",
    "interconnect_bits", "dram_bits", *(energy_field(c) for c in ENERGY_COMPONENTS), "energy_uj", "latency_us",
    *(area_field(c) for c in AREA_COMPONENTS), "area_mm2",
)  # fmt: skip


def field_unit(name: str) -> str:
    """The unit of a record field (as results.json names units)."""
    if name.endswith("_uj"):
        return "µJ"
    if name.endswith("_us"):
        return "µs"
    if name.endswith("_mm2"):
        return "mm²"
    if name == "size_bytes":
        return "bytes"
    if name.endswith("_bits") and name not in ("buffer_bits", "interconnect_bits", "dram_bits"):
        return "bits"
    if name in ("buffer_bits", "interconnect_bits", "dram_bits"):
        return "bit"
    if name == "macs":
        return "MAC/sample"
    if name == "bops":
        return "bit-op/sample"
    return "count"
