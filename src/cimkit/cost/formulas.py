"""The cost formulas: short functions of counts and spec numbers, each with its source and units.

Conventions: energies in pJ, times in ns, areas in µm² (converted to µJ, µs, mm² in the records);
conductances in µS (µS · V² · ns = 1e-15 J = 1e-3 pJ). ``spec`` is a
:class:`~cimkit.cost.specs.HardwareSpec`.
"""

from __future__ import annotations

import math

__all__ = [
    "accumulator_bits", "adc_energy_pj", "cell_energy_pj", "column_resistance_ohm", "dac_energy_pj",
    "interconnect_energy_pj", "read_time_ns", "sequential_conversions", "systolic_cycles", "tops", "tops_per_w",
]  # fmt: skip


def accumulator_bits(w_bits: int, a_bits: int, fan_in: int) -> int:
    """Width of an exact partial-sum accumulator: ``w + a + ceil(log2(fan_in))``, at most 32 bits."""
    return int(min(32, w_bits + a_bits + math.ceil(math.log2(max(fan_in, 1)))))


def column_resistance_ohm(rows: float, input_density: float, g_mean_us: float) -> float:
    """Resistance a column presents to its converter while ``rows`` rows are driven: the
    ``rows · input_density`` active cells of mean conductance ``g_mean_us`` in parallel (Ω); infinite
    when no current flows. (NeuroSim estimates the average column the same way: ``SubArray.cpp``
    ``resMemCellAvg``, half the cells on.)"""
    g = rows * input_density * g_mean_us * 1e-6  # S
    return 1.0 / g if g > 0 else math.inf


def cell_energy_pj(cell_reads: float, spec: object, t_ns: float) -> float:
    """Current through the read cells: ``reads · input_density · V_read² · G_mean · t`` (pJ), over the
    sensing time ``t`` of each sample (the cells of a column conduct while it is sampled; NeuroSim
    charges this current to its ADC's column term)."""
    return cell_reads * spec.input_density * spec.v_read_v**2 * spec.g_mean_us * t_ns * 1e-3  # type: ignore[attr-defined]


def adc_energy_pj(conversions: float, spec: object, bits: int, rows_per_read: float) -> float:
    """``conversions · E_adc(bits, R_col, V_read)`` (pJ) with the spec's ADC model and the column
    resistance of a read of ``rows_per_read`` rows (:func:`column_resistance_ohm`)."""
    r_col = column_resistance_ohm(rows_per_read, spec.input_density, spec.g_mean_us)  # type: ignore[attr-defined]
    return conversions * spec.adc_model.energy_pj(bits, r_col, spec.v_read_v)  # type: ignore[attr-defined]


def dac_energy_pj(drives: float, spec: object, dac_bits: int, bit_serial: bool, read_ns: float) -> float:
    """Row drivers: ``drives · P_dac · t_read`` (pJ) with ``P_dac = dac_uw · 2^(b−1)`` µW (MNSIM's
    DAC powers from ISAAC: 1 b 3.9 µW, 2 b 7.8, 4 b 31.2) held for the whole read; a bit-serial
    driver only pulses for 1-bits (``input_density`` of them)."""
    p_uw = spec.dac_uw * 2.0 ** (dac_bits - 1)  # type: ignore[attr-defined]
    active = spec.input_density if bit_serial else 1.0  # type: ignore[attr-defined]
    return drives * active * p_uw * read_ns * 1e-3


def sequential_conversions(cols_in_array: int, tile_cols: int, cols_per_adc: int) -> int:
    """Conversions one ADC does per read: the array has ``ceil(tile_cols / cols_per_adc)`` ADCs, so
    ``ceil(cols / n_adc)`` of its ``cols`` used columns go through each in turn."""
    n_adc = -(-tile_cols // cols_per_adc)
    return -(-cols_in_array // n_adc)


def read_time_ns(spec: object, seq: int, adc_ns: float) -> float:
    """One array read: settling, then ``seq`` conversions of ``adc_ns`` each, times NeuroSim's
    sensing-latency factor (β = 1.4 when validated, ``Param.cpp`` l.371-378)."""
    return spec.t_settle_ns + seq * adc_ns * spec.sensing_latency_factor  # type: ignore[attr-defined]


def systolic_cycles(k: int, n: int, positions: int, rows: int, cols: int) -> int:
    """Weight-stationary ``rows x cols`` systolic array (SCALE-Sim's first-order model): the ``k x n``
    weight matrix in ``ceil(k/rows)·ceil(n/cols)`` folds, each streaming ``positions`` input vectors
    plus ``rows + cols − 2`` cycles of fill and drain."""
    folds = -(-k // rows) * -(-n // cols)
    return folds * (positions + rows + cols - 2)


def interconnect_energy_pj(bits: float, spec: object, distance_mm: float) -> float:
    """``bits · (C_wire · distance · V_DD² + E_router)`` (pJ): ``interconnect_fj_per_bit_mm`` fF per
    bit and mm (NeuroSim systolic V1.0: 12 fF/mm/bit from CACTI 6.0) charged at ``vdd_v``, plus
    ``interconnect_pj_per_bit`` (ISAAC's router: 20.74 pJ per 256 bits)."""
    c_ff = spec.interconnect_fj_per_bit_mm * distance_mm  # type: ignore[attr-defined]
    return bits * (c_ff * spec.vdd_v**2 * 1e-3 + spec.interconnect_pj_per_bit)  # type: ignore[attr-defined]


def tops_per_w(macs: float, energy_uj: float) -> float:
    """``2 · MACs / energy`` in TOPS/W (ops = 2 per MAC, NeuroSim's convention)."""
    return 2.0 * macs / (energy_uj * 1e-6) / 1e12 if energy_uj > 0 else 0.0


def tops(macs: float, latency_us: float) -> float:
    """``2 · MACs / latency`` in TOPS."""
    return 2.0 * macs / (latency_us * 1e-6) / 1e12 if latency_us > 0 else 0.0
