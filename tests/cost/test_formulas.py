"""Every cost formula against a hand calculation from its source's numbers."""

from __future__ import annotations

import math

import pytest

from cimkit.cost import ADCS, DIGITAL, SPECS, FlashADC, NeuroSimSAR, SchreierADC, TableADC, WaldenADC, storage_bytes
from cimkit.cost.adc import survey_area_um2
from cimkit.cost.formulas import (
    accumulator_bits,
    cell_energy_pj,
    column_resistance_ohm,
    dac_energy_pj,
    interconnect_energy_pj,
    read_time_ns,
    sequential_conversions,
    systolic_cycles,
    tops,
    tops_per_w,
)
from cimkit.errors import ConfigError


def test_neurosim_sar_energy_latency_area_by_hand() -> None:
    sar = ADCS.get("neurosim_sar_22nm")
    assert isinstance(sar, NeuroSimSAR)
    # static part only (no column current): P = (0.538 b + 4.3753) µW over (b + 1) ns
    for b, fj in ((4, 32.6), (8, 78.1)):  # round2 anchors §1.2.1: 4b 32.6 fJ, 8b 78.1 fJ
        hand = (0.538 * b + 4.3753) * 1e-6 * (b + 1) * 1e-9 * 1e12
        assert sar.energy_pj(b) == pytest.approx(hand, rel=1e-12)
        assert 1e3 * sar.energy_pj(b) == pytest.approx(fj, abs=0.05)
    # column term: 0.072341 / R' W with R' = R_col · 0.5 / V_read; 10 kΩ at 0.55 V gives ~150 fJ at 8 b
    r_prime = 10e3 * 0.5 / 0.55
    hand = ((0.538 * 8 + 4.3753) * 1e-6 + 0.072341 / r_prime) * 9e-9 * 1e12
    assert sar.energy_pj(8, 10e3, 0.55) == pytest.approx(hand, rel=1e-12)
    assert 1e3 * sar.energy_pj(8, 10e3, 0.55) == pytest.approx(150, abs=1.0)
    assert sar.latency_ns(5) == 6.0
    a = sar.nmos_um2
    assert sar.area_um2(4) == pytest.approx(a * (269 + 109 * 3) + sar.pmos_um2 * (209 + 73 * 3), rel=1e-12)
    hot = sar.replace(temperature_k=350.0)
    assert hot.energy_pj(8) == pytest.approx(sar.energy_pj(8) * (1 + 1.3e-3 * 50), rel=1e-12)


def test_flash_adc_scales_with_comparators() -> None:
    fl = ADCS.get("neurosim_flash_22nm")
    assert isinstance(fl, FlashADC)
    p_sa = -1.63133e-7 * math.log(10e3) + 2.1687e-6  # W per sense amplifier at 10 kΩ (22 nm fit)
    for b in (3, 4, 5, 6):
        assert fl.energy_pj(b, 10e3) == pytest.approx((2**b - 1) * p_sa * 1e-9 * 1e12, rel=1e-12)
    assert 1e3 * fl.energy_pj(4, 10e3) == pytest.approx(10.0, abs=0.1)  # anchors: 4b ≈ 10 fJ
    # outside the fit's range the power at the nearer end is held
    assert fl.energy_pj(4, 100.0) == pytest.approx(fl.energy_pj(4, 4832.0), rel=1e-12)
    assert fl.energy_pj(4) == pytest.approx(fl.energy_pj(4, 379269.0), rel=1e-12)
    assert fl.area_um2(5) == pytest.approx(9 * fl.transistor_um2 * 31, rel=1e-12)


def test_table_adc_lists_and_interpolates_geometrically() -> None:
    isaac = ADCS.get("isaac_32nm")
    assert isinstance(isaac, TableADC)
    assert isaac.energy_pj(8) == 1.67 and isaac.area_um2(8) == 1200  # ISAAC's 8-bit SAR
    assert isaac.energy_pj(6) == 1.20
    assert isaac.latency_ns(8) == pytest.approx(1 / 1.2)
    t = TableADC(bits=[4, 8], energies_pj=[1.0, 16.0], areas_um2=[10.0, 160.0])
    assert t.energy_pj(6) == pytest.approx(4.0, rel=1e-12)  # geometric mean of the neighbours
    assert t.energy_pj(10) == pytest.approx(64.0, rel=1e-12)  # the last segment's slope
    with pytest.raises(ConfigError, match="strictly increasing"):
        TableADC(bits=[8, 4], energies_pj=[1.0, 2.0], areas_um2=[1.0, 2.0])


def test_figure_of_merit_adcs() -> None:
    s = ADCS.get("schreier_180db")
    assert isinstance(s, SchreierADC)
    sndr = 6.02 * 8 + 1.76
    assert s.energy_pj(8) == pytest.approx(1 / (2 * 10 ** ((180 - sndr) / 10)) * 1e12, rel=1e-12)
    assert 1e3 * s.energy_pj(8) == pytest.approx(49, abs=0.5)  # anchors: ~49 fJ
    w = ADCS.get("walden_5fj")
    assert isinstance(w, WaldenADC)
    assert w.energy_pj(8) == pytest.approx(5e-3 * 256, rel=1e-12)
    # the survey area fit gives the anchors' 2199 µm² for 0.85 pJ at 22 nm and 100 MS/s
    assert survey_area_um2(22, 1e8, 0.85) == pytest.approx(2199, rel=0.01)
    assert survey_area_um2(32, 1e8, 1.71) == pytest.approx(3939, rel=0.01)


def test_digital_arithmetic_tables() -> None:
    h = DIGITAL.get("horowitz_45nm")
    assert h.mac_energy_pj(8, 8) == 0.2 + 0.03  # Horowitz: 8-bit mult 0.2 + add 0.03 pJ, exactly
    assert h.mult_energy_pj(32, 32) == 3.1 and h.add_energy_pj(16) == 0.05
    assert h.mac_energy_pj(32, 32) == 3.7 + 0.9  # float operands use the fp32 units
    # between listed widths: a log-log line through the neighbours
    assert h.add_energy_pj(12) == pytest.approx(math.exp(math.log(0.03) + math.log(0.05 / 0.03) * math.log(12 / 8) / math.log(2)), rel=1e-12)  # fmt: skip
    n = DIGITAL.get("neurosim_22nm")
    assert n.add_energy_pj(16) == pytest.approx(2 * 0.00858, rel=1e-12)  # one listed width: ripple-carry, ∝ n
    assert n.mult_energy_pj(16, 16) == pytest.approx(4 * 0.4144, rel=1e-12)  # array multiplier, ∝ n²
    assert n.mult_energy_pj(4, 16) == pytest.approx(n.mult_energy_pj(8, 8), rel=1e-12)  # sqrt(n·m) = 8
    assert n.add_area_um2(8) == 11.1


def test_storage_rule() -> None:
    # 100 weights at 4 bits, 10 channels with asymmetric grids, 10 biases, quantized activations
    assert storage_bytes(100, 4, bias=10, scales=10, zero_points=10, act_grid=True) == 50 + 40 + 10 + 40 + 8
    assert storage_bytes(100, 12, zero_points=3) == 150 + 6  # zero points above 8 bits take 2 bytes
    assert storage_bytes(7, 32, bias=2) == 4 * 9  # a float layer: 4 bytes per value


def test_array_dac_and_timing_formulas() -> None:
    spec = SPECS.get("rram_22nm")
    assert column_resistance_ohm(32, 0.5, 5.0) == pytest.approx(1 / (32 * 0.5 * 5e-6), rel=1e-12)
    assert column_resistance_ohm(32, 0.5, 0.0) == math.inf
    g = 0.5 * 10.0 + 0.5 * 10.0 / 17  # µS: half the cells on (G_on 10 µS), half off (on/off 17)
    assert spec.g_mean_us == pytest.approx(g, rel=1e-12)
    # µS · V² · ns = 1e-15 J = 1e-3 pJ
    assert cell_energy_pj(1000, spec, 2.0) == pytest.approx(1000 * 0.5 * 0.55**2 * g * 2.0 * 1e-3, rel=1e-12)
    assert dac_energy_pj(100, spec, 1, True, 8.0) == pytest.approx(100 * 0.5 * 3.9 * 8.0 * 1e-3, rel=1e-12)
    assert dac_energy_pj(100, spec, 4, False, 8.0) == pytest.approx(100 * 3.9 * 8 * 8.0 * 1e-3, rel=1e-12)
    assert sequential_conversions(128, 128, 8) == 8 and sequential_conversions(72, 128, 8) == 5
    assert read_time_ns(spec, 8, 1.0) == pytest.approx(8 * 1.0 * 1.4)  # NeuroSim's β = 1.4
    assert systolic_cycles(27, 16, 64, 16, 16) == 2 * 1 * (64 + 30)
    assert accumulator_bits(8, 8, 1152) == 8 + 8 + 11 and accumulator_bits(16, 16, 4096) == 32
    assert interconnect_energy_pj(1000, spec, 2.0) == pytest.approx(1000 * 12 * 2.0 * 0.85**2 * 1e-3, rel=1e-12)
    isaac = SPECS.get("isaac_32nm")
    assert interconnect_energy_pj(256, isaac, 5.0) == pytest.approx(20.74, rel=1e-12)  # router: 20.74 pJ / 256 b
    assert tops_per_w(1e9, 100.0) == pytest.approx(2e9 / 1e-4 / 1e12)  # 2 ops per MAC
    assert tops(1e9, 100.0) == pytest.approx(2e9 / 1e-4 / 1e12)


def test_spec_slicing_rules_and_validation() -> None:
    s = SPECS.get("rram_22nm")  # offset pairing, 1 bit per cell
    assert s.slices_for(8) == 8 and s.slices_for(1) == 1 and s.devices == 1
    d = s.replace(weight_pair="differential", bits_per_cell=2)
    assert d.slices_for(8) == 4 and d.slices_for(2) == 1 and d.devices == 2  # 7 magnitude bits on 2-bit cells
    assert s.planes_for(8) == 8 and s.replace(bit_serial=False).planes_for(8) == 1
    with pytest.raises(ConfigError, match="adc"):
        s.replace(adc="isac_32nm")
    with pytest.raises(ConfigError, match="parallel_rows"):
        s.replace(parallel_rows=500)
