"""Digital arithmetic and memory at one technology node: what a MAC, an add, a DRAM bit costs.

:class:`DigitalModel`: integer adders and multipliers listed at a few widths (energy in pJ per
operation, area in µm² per unit), interpolated between listed widths on a log-log line and
extrapolated with the last segment's slope (or ``add_exponent`` / ``mult_exponent`` when one width
is listed: 1 for a ripple-carry adder, 2 for an array multiplier, whose cells grow as n²);
floating-point add and multiply at 32 bits. A MAC of ``w``-bit weights and ``a``-bit activations
costs ``mult(w, a) + add(max(w, a))`` (the accumulating add priced at the operand width, the usual
reading of Horowitz's table: an 8-bit MAC is 0.2 + 0.03 pJ at 45 nm); an ``n x m`` multiply is
priced as the square multiply at ``sqrt(n·m)`` bits. Float operands (32 bits) use the float units.

:class:`MemoryModel`: DRAM energy per bit.

Presets (:data:`DIGITAL`, :data:`MEMORIES`) name their source; Horowitz's numbers are the widely
reproduced table of his ISSCC 2014 keynote (round2 anchors §1.4, marked there as recalled and
confirmed by secondary sources).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.registry import Registry

__all__ = ["DIGITAL", "MEMORIES", "DigitalModel", "MemoryModel", "digital_model", "memory_model"]

FLOAT_BITS = 32


def _loglog(xs: list[int], ys: list[float], x: float, exponent: float) -> float:
    """Interpolate ``ys(xs)`` at ``x`` on a log-log line (one point: power law with ``exponent``)."""
    for xi, yi in zip(xs, ys):
        if x == xi:
            return yi  # a listed width: the listed value, exactly
    if len(xs) == 1:
        return ys[0] * (x / xs[0]) ** exponent
    i = next((j for j, v in enumerate(xs) if v >= x), len(xs) - 1)
    i = min(max(i, 1), len(xs) - 1)
    x0, x1 = math.log(xs[i - 1]), math.log(xs[i])
    y0, y1 = math.log(ys[i - 1]), math.log(ys[i])
    return math.exp(y0 + (y1 - y0) * (math.log(x) - x0) / (x1 - x0))


@dataclass
class DigitalModel(Config):
    """Digital arithmetic of one node (see the module docstring). Energies in pJ per operation,
    areas in µm² per unit; ``*_bits`` lists the widths the ``*_pj`` / ``*_um2`` values are given at."""

    node_nm: float = 45.0
    add_bits: list[int] = field(default_factory=lambda: [8, 16, 32])
    add_pj: list[float] = field(default_factory=lambda: [0.03, 0.05, 0.1])
    add_um2: list[float] = field(default_factory=lambda: [36.0, 67.0, 137.0])
    add_exponent: float = 1.0
    mult_bits: list[int] = field(default_factory=lambda: [8, 32])
    mult_pj: list[float] = field(default_factory=lambda: [0.2, 3.1])
    mult_um2: list[float] = field(default_factory=lambda: [282.0, 3495.0])
    mult_exponent: float = 2.0
    fp32_add_pj: float = 0.9
    fp32_mult_pj: float = 3.7
    fp32_add_um2: float = 4184.0
    fp32_mult_um2: float = 7700.0

    def __post_init__(self) -> None:
        for name in ("add", "mult"):
            bits, pj, um2 = (getattr(self, f"{name}_{k}") for k in ("bits", "pj", "um2"))
            if not bits or not (len(bits) == len(pj) == len(um2)):
                raise ConfigError(f"{name}_bits, {name}_pj, {name}_um2: need the same non-zero length")
            if sorted(set(bits)) != list(bits):
                raise ConfigError(f"{name}_bits: {bits} must be strictly increasing")
            for v in (*pj, *um2):
                check_range(f"{name} value", v, 0.0, lo_open=True)

    # ------------------------------------------------------------------ energies (pJ)

    def add_energy_pj(self, bits: int) -> float:
        """One ``bits``-wide integer add."""
        return _loglog(self.add_bits, self.add_pj, max(bits, 1), self.add_exponent)

    def mult_energy_pj(self, w_bits: int, a_bits: int) -> float:
        return _loglog(self.mult_bits, self.mult_pj, math.sqrt(max(w_bits, 1) * max(a_bits, 1)), self.mult_exponent)

    def mac_energy_pj(self, w_bits: int, a_bits: int) -> float:
        """``mult(w, a) + add(max(w, a))``; float (32-bit operand) MACs use the float units."""
        if max(w_bits, a_bits) >= FLOAT_BITS:
            return self.fp32_mult_pj + self.fp32_add_pj
        return self.mult_energy_pj(w_bits, a_bits) + self.add_energy_pj(max(w_bits, a_bits))

    def op_energy_pj(self, bits: int) -> float:
        """An elementwise operation (priced as one add at the activation width; float: fp32 add)."""
        return self.fp32_add_pj if bits >= FLOAT_BITS else self.add_energy_pj(bits)

    # ------------------------------------------------------------------ areas (µm²)

    def add_area_um2(self, bits: int) -> float:
        return _loglog(self.add_bits, self.add_um2, max(bits, 1), self.add_exponent)

    def mac_area_um2(self, w_bits: int, a_bits: int) -> float:
        if max(w_bits, a_bits) >= FLOAT_BITS:
            return self.fp32_mult_um2 + self.fp32_add_um2
        mult = _loglog(self.mult_bits, self.mult_um2, math.sqrt(max(w_bits, 1) * max(a_bits, 1)), self.mult_exponent)
        return mult + self.add_area_um2(max(w_bits, a_bits))


DIGITAL: Registry[DigitalModel] = Registry("digital arithmetic model")
DIGITAL.add(
    "horowitz_45nm",
    DigitalModel(),
    "Horowitz 45 nm, 0.9 V: 8 b add 0.03 / mult 0.2 pJ, 32 b add 0.1 / mult 3.1, fp32 add 0.9 / mult 3.7 pJ",
    source="M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014; the widely "
    "reproduced table (round2 anchors §1.4, [R], confirmed by stillwater-sc/universal generic_45nm.hpp and "
    "Han et al.'s EIE numbers)",
)
DIGITAL.add(
    "neurosim_22nm",
    DigitalModel(
        node_nm=22.0, add_bits=[8], add_pj=[0.00858], add_um2=[11.1], mult_bits=[8], mult_pj=[0.4144],
        mult_um2=[670.5],
    ),
    "NeuroSim digital systolic array, 22 nm LSTP: 8 b adder 0.00858 pJ / 11.1 µm², multiplier 0.4144 pJ / 670.5 µm²",
    source="neurosim/NeuroSim tag 2DInferenceDigitalSystolicArrayV1.0 parameters.py (round2 anchors §1.2.1); "
    "float units from Horowitz 45 nm (the source gives none at 22 nm)",
)
DIGITAL.add(
    "neurosim_32nm",
    DigitalModel(
        node_nm=32.0, add_bits=[8], add_pj=[0.0163], add_um2=[23.5], mult_bits=[8], mult_pj=[0.8223],
        mult_um2=[1418.7],
    ),
    "NeuroSim digital systolic array, 32 nm LSTP: 8 b adder 0.0163 pJ / 23.5 µm², multiplier 0.8223 pJ / 1418.7 µm²",
    source="neurosim/NeuroSim tag 2DInferenceDigitalSystolicArrayV1.0 parameters.py (round2 anchors §1.2.1); "
    "float units from Horowitz 45 nm",
)


@dataclass
class MemoryModel(Config):
    """Off-chip DRAM: ``pj_per_bit`` per bit read or written."""

    pj_per_bit: float = 1.2

    def __post_init__(self) -> None:
        check_range("pj_per_bit", self.pj_per_bit, 0.0)


MEMORIES: Registry[MemoryModel] = Registry("DRAM model")
MEMORIES.add("lpddr4", MemoryModel(1.2), "LPDDR4 DRAM, 1.2 pJ/bit",
             source="NeuroSim digital systolic array V1.0 parameters.py (round2 anchors §1.2.1)")  # fmt: skip
MEMORIES.add("lpddr3", MemoryModel(4.0), "LPDDR3 DRAM, 4.0 pJ/bit",
             source="NeuroSim digital systolic array V1.0 parameters.py (round2 anchors §1.2.1)")  # fmt: skip
MEMORIES.add("lpddr4_accelergy", MemoryModel(8.0), "LPDDR4 DRAM as in Timeloop/Accelergy's Eyeriss-like run: "
             "512 pJ per 64-bit access = 8 pJ/bit",
             source="timeloop-accelergy-exercises eyeriss_like ERT_summary.yaml (round2 anchors §1.4)")  # fmt: skip


def digital_model(name: str) -> DigitalModel:
    return DIGITAL.get(name)


def memory_model(name: str) -> MemoryModel:
    return MEMORIES.get(name)
