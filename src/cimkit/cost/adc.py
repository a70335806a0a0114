"""Swappable ADC models: energy (pJ) per conversion, latency (ns) per conversion, area (µm²) per ADC.

The price of "an 8-bit ADC conversion" differs by about 200x between the tools of the field
(NeuroSim's 22 nm SAR ~0.08-0.15 pJ, a survey-based model 0.85 pJ, ISAAC's 32 nm SAR 1.67 pJ,
MNSIM's 15.6 pJ), so a cost estimate always names the ADC model that priced it. Five kinds:

* :class:`NeuroSimSAR`: NeuroSim V1.4 ``SarADC.cpp``: power ``P = (a·b + c) µW + k / R'`` with
  ``R' = R_col · 0.5 / V_read`` (the column current of the array), energy ``P · (b + 1) · t_bit``,
  latency ``(b + 1) · t_bit``; area ``A_n·(269 + 109(b−1)) + A_p·(209 + 73(b−1))`` minimum transistors.
  Near-linear in ``b``.
* :class:`FlashADC`: NeuroSim V1.4 ``MultilevelSenseAmp.cpp`` (multi-level sense amplifiers):
  ``2^b − 1`` sense amplifiers per conversion, each drawing ``p1 · ln R_col + p0`` W during the
  sensing time; area ``9 · A_min · (2^b − 1)``. Classic flash scaling ``∝ 2^b − 1``.
* :class:`TableADC`: measured or curated points (bits -> pJ, µm²), interpolated geometrically
  between listed resolutions (ISAAC's 32 nm SAR set; the Accelergy survey model evaluated at a node).
* :class:`SchreierADC`: figure of merit ``FoM_S = SNDR + 10·log10(f_s / 2P)``, so
  ``E = P / f_s = 1 / (2 · 10^((FoM_S − SNDR)/10))`` J with ``SNDR = 6.02 b + 1.76`` dB.
* :class:`WaldenADC`: ``E = FoM_W · 2^b`` (J per conversion step).

Each preset in :data:`ADCS` names its source. ``energy_pj(bits, r_col_ohm, v_read_v)`` takes the
column resistance seen by the converter (models without a column term ignore it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.registry import Registry

__all__ = ["ADCS", "ADCModel", "FlashADC", "NeuroSimSAR", "SchreierADC", "TableADC", "WaldenADC", "adc_model",
           "survey_area_um2"]


class ADCModel(Config):
    """Base of the ADC models (a Config: every number a field with its unit)."""

    def energy_pj(self, bits: int, r_col_ohm: float = math.inf, v_read_v: float = 0.0) -> float:
        raise NotImplementedError  # pragma: no cover - abstract

    def latency_ns(self, bits: int) -> float:
        raise NotImplementedError  # pragma: no cover - abstract

    def area_um2(self, bits: int) -> float:
        raise NotImplementedError  # pragma: no cover - abstract


def _check_bits(bits: int) -> None:
    if bits < 1:
        raise ConfigError(f"adc bits: {bits} is out of range; allowed: >= 1")


@dataclass
class NeuroSimSAR(ADCModel):
    """NeuroSim V1.4 SAR ADC (``SarADC.cpp`` l.81, l.131, l.211-216, l.241-242), see module docstring.

    ``a_uw`` µW/bit and ``c_uw`` µW: static power fit; ``k_w`` W·Ω: column-current coefficient;
    ``t_bit_ns``: one SAR cycle; ``temperature_k``: ``× (1 + 1.3e-3 (T − 300))``;
    ``nmos_um2`` / ``pmos_um2``: area of a minimum transistor."""

    a_uw: float = 0.538
    c_uw: float = 4.3753
    k_w: float = 0.072341
    t_bit_ns: float = 1.0
    temperature_k: float = 300.0
    nmos_um2: float = 0.170
    pmos_um2: float = 0.170

    def power_w(self, bits: int, r_col_ohm: float = math.inf, v_read_v: float = 0.0) -> float:
        """``P = (a·b + c)·1e-6 + k / R'`` W with ``R' = R_col · 0.5 / V_read``, temperature factor."""
        p = (self.a_uw * bits + self.c_uw) * 1e-6
        if v_read_v > 0 and math.isfinite(r_col_ohm) and r_col_ohm > 0:
            p += self.k_w / (r_col_ohm * 0.5 / v_read_v)
        return p * (1.0 + 1.3e-3 * (self.temperature_k - 300.0))

    def energy_pj(self, bits: int, r_col_ohm: float = math.inf, v_read_v: float = 0.0) -> float:
        _check_bits(bits)
        return self.power_w(bits, r_col_ohm, v_read_v) * self.latency_ns(bits) * 1e-9 * 1e12

    def latency_ns(self, bits: int) -> float:
        return (bits + 1) * self.t_bit_ns

    def area_um2(self, bits: int) -> float:
        return self.nmos_um2 * (269 + 109 * (bits - 1)) + self.pmos_um2 * (209 + 73 * (bits - 1))


@dataclass
class FlashADC(ADCModel):
    """Flash ADC of ``2^b − 1`` multi-level sense amplifiers (NeuroSim V1.4 ``MultilevelSenseAmp.cpp``
    l.176-177 area, l.590-617 column power at 22 nm in current mode, l.473-475 latency).

    Per amplifier ``P_sa = max(p1_w · ln(R_col) + p0_w, p_min_w)`` W (the fit for
    ``r_lo_ohm <= R_col < r_hi_ohm``; outside it the power at the nearer end is held) during
    ``t_ns``; without a column resistance ``p_open_w`` (the fit at ``r_hi_ohm``).
    Area ``9 · transistor_um2 · (2^b − 1)``."""

    p1_w: float = -1.63133e-7
    p0_w: float = 2.1687e-6
    r_lo_ohm: float = 4832.0
    r_hi_ohm: float = 379269.0
    p_min_w: float = 0.0
    t_ns: float = 1.0
    transistor_um2: float = 0.170

    def sa_power_w(self, r_col_ohm: float) -> float:
        r = min(max(r_col_ohm, self.r_lo_ohm), self.r_hi_ohm) if math.isfinite(r_col_ohm) else self.r_hi_ohm
        return max(self.p1_w * math.log(r) + self.p0_w, self.p_min_w)

    def energy_pj(self, bits: int, r_col_ohm: float = math.inf, v_read_v: float = 0.0) -> float:
        _check_bits(bits)
        return (2**bits - 1) * self.sa_power_w(r_col_ohm) * self.t_ns * 1e-9 * 1e12

    def latency_ns(self, bits: int) -> float:
        return self.t_ns

    def area_um2(self, bits: int) -> float:
        return 9.0 * self.transistor_um2 * (2**bits - 1)


@dataclass
class TableADC(ADCModel):
    """Listed resolutions ``bits`` with energy ``energy_pj`` and area ``area_um2`` at sample rate
    ``rate_gsps``; between listed points both are interpolated geometrically (straight lines in
    log scale), outside them extrapolated from the two nearest points."""

    bits: list[int] = field(default_factory=lambda: [8])
    energies_pj: list[float] = field(default_factory=lambda: [1.0])
    areas_um2: list[float] = field(default_factory=lambda: [1000.0])
    rate_gsps: float = 1.0

    def __post_init__(self) -> None:
        if not (len(self.bits) == len(self.energies_pj) == len(self.areas_um2)) or not self.bits:
            raise ConfigError("TableADC: bits, energies_pj and areas_um2 need the same (non-zero) length")
        if sorted(self.bits) != list(self.bits) or len(set(self.bits)) != len(self.bits):
            raise ConfigError(f"TableADC.bits: {self.bits} must be strictly increasing")
        for v in (*self.energies_pj, *self.areas_um2):
            check_range("TableADC value", v, 0.0, lo_open=True)
        check_range("rate_gsps", self.rate_gsps, 0.0, lo_open=True)

    def _interp(self, values: list[float], b: int) -> float:
        xs = self.bits
        if len(xs) == 1:
            return values[0] * 2.0 ** (b - xs[0]) if b != xs[0] else values[0]
        if b in xs:
            return values[xs.index(b)]
        i = max(1, min(len(xs) - 1, next((j for j, x in enumerate(xs) if x > b), len(xs) - 1)))
        x0, x1, y0, y1 = xs[i - 1], xs[i], math.log(values[i - 1]), math.log(values[i])
        return math.exp(y0 + (y1 - y0) * (b - x0) / (x1 - x0))

    def energy_pj(self, bits: int, r_col_ohm: float = math.inf, v_read_v: float = 0.0) -> float:
        _check_bits(bits)
        return self._interp(self.energies_pj, bits)

    def latency_ns(self, bits: int) -> float:
        return 1.0 / self.rate_gsps

    def area_um2(self, bits: int) -> float:
        return self._interp(self.areas_um2, bits)


@dataclass
class SchreierADC(ADCModel):
    """Schreier figure of merit ``fom_db`` (dB): ``E = 1 / (2 · 10^((FoM_S − SNDR)/10))`` J with
    ``SNDR = 6.02 b + 1.76`` dB (Murmann ADC survey; Accelergy ADC plug-in ``foms_sndr2energy``);
    ``rate_gsps`` sets the latency; ``areas_um2per_pj``: area per pJ of conversion energy."""

    fom_db: float = 180.0
    rate_gsps: float = 1.0
    areas_um2per_pj: float = 1000.0

    def energy_pj(self, bits: int, r_col_ohm: float = math.inf, v_read_v: float = 0.0) -> float:
        _check_bits(bits)
        sndr = 6.02 * bits + 1.76
        return 1.0 / (2.0 * 10.0 ** ((self.fom_db - sndr) / 10.0)) * 1e12

    def latency_ns(self, bits: int) -> float:
        return 1.0 / self.rate_gsps

    def area_um2(self, bits: int) -> float:
        return self.areas_um2per_pj * self.energy_pj(bits)


@dataclass
class WaldenADC(ADCModel):
    """Walden figure of merit: ``E = fom_fj · 2^b`` fJ per conversion (``fom_fj``: fJ per
    conversion step); ``rate_gsps`` sets the latency, ``areas_um2per_pj`` the area."""

    fom_fj: float = 5.0
    rate_gsps: float = 1.0
    areas_um2per_pj: float = 1000.0

    def energy_pj(self, bits: int, r_col_ohm: float = math.inf, v_read_v: float = 0.0) -> float:
        _check_bits(bits)
        return self.fom_fj * 2.0**bits * 1e-3

    def latency_ns(self, bits: int) -> float:
        return 1.0 / self.rate_gsps

    def area_um2(self, bits: int) -> float:
        return self.areas_um2per_pj * self.energy_pj(bits)


def survey_area_um2(node_nm: float, rate_hz: float, energy_pj: float) -> float:
    """ADC area fit of the Accelergy ADC plug-in over the Murmann survey (µm²):
    ``exp(1.346 + 0.993 ln(node_nm) + 0.181 ln(f_s / Hz) + 0.299 ln(E / pJ))``
    (22 nm, 100 MS/s, 0.85 pJ gives 2199 µm²; round2 anchors §1.2.3)."""
    return math.exp(1.346 + 0.993 * math.log(node_nm) + 0.181 * math.log(rate_hz) + 0.299 * math.log(energy_pj))


ADCS: Registry[ADCModel] = Registry("ADC model")

# minimum transistor in NeuroSim's layout model (constant.h): a 28F-high cell, one contacted poly pitch
# (POLY_WIDTH 1.0F + MIN_GAP_BET_GATE_POLY 2.8F) wide = 106.4 F²; F = 40 nm at the 22 nm node, 56 nm at 32 nm
_A_MIN_22 = 106.4 * 0.040**2  # µm²
_A_MIN_32 = 106.4 * 0.056**2  # µm²

ADCS.add(
    "neurosim_sar_22nm",
    NeuroSimSAR(nmos_um2=_A_MIN_22, pmos_um2=_A_MIN_22),
    "NeuroSim V1.4 SAR ADC, 22 nm LSTP: (0.538 b + 4.3753) µW + column term, (b+1) ns",
    source="DNN_NeuroSim_V1.4 Inference_pytorch/NeuroSIM/SarADC.cpp l.81, l.131, l.214-216, l.241-242 (@ac828e6); "
    "minimum transistor from constant.h (28F cell height, 3.8F poly pitch), F = 40 nm (Param.cpp)",
)
ADCS.add(
    "neurosim_sar_32nm",
    NeuroSimSAR(a_uw=1.1294, c_uw=8.8998, k_w=0.079449, nmos_um2=_A_MIN_32, pmos_um2=_A_MIN_32),
    "NeuroSim V1.4 SAR ADC, 32 nm LSTP: (1.1294 b + 8.8998) µW + column term, (b+1) ns",
    source="DNN_NeuroSim_V1.4 SarADC.cpp l.211-213 (@ac828e6); F = 56 nm (Param.cpp)",
)
ADCS.add(
    "neurosim_flash_22nm",
    FlashADC(transistor_um2=_A_MIN_22),
    "NeuroSim V1.4 flash ADC (multi-level current sense amplifiers), 22 nm: (2^b − 1) amplifiers, 1 ns",
    source="DNN_NeuroSim_V1.4 MultilevelSenseAmp.cpp l.176-177, l.606-617 (22 nm current-mode fit), "
    "1 ns sensing (manual §6: ~1 ns 5-bit flash ADC at 22 nm) (@ac828e6)",
)
ADCS.add(
    "neurosim_flash_32nm",
    FlashADC(p1_w=-7.28881e-8, p0_w=1.02677e-6, transistor_um2=_A_MIN_32),
    "NeuroSim V1.4 flash ADC (multi-level current sense amplifiers), 32 nm",
    source="DNN_NeuroSim_V1.4 MultilevelSenseAmp.cpp l.590-600 (32 nm current-mode fit) (@ac828e6)",
)
ADCS.add(
    "isaac_32nm",
    TableADC(bits=[4, 5, 6, 7, 8, 9, 10], energies_pj=[0.79, 0.99, 1.20, 1.42, 1.67, 1.97, 2.38],
             areas_um2=[361, 477, 627, 845, 1200, 1828, 3002], rate_gsps=1.2),
    "ISAAC 32 nm SAR (Kull et al. ISSCC 2013 scaled), 8 b 1.67 pJ / 1200 µm² at 1.2 GS/s",
    source="Shafiee et al. ISCA 2016 (ISAAC) as curated in Accelergy-Project/hwcomponents-library "
    "library/isaac.py l.308-314 (Saberi 2011 resolution scaling)",
)  # fmt: skip
ADCS.add(
    "survey_22nm",
    TableADC(bits=[4, 6, 8], energies_pj=[0.46, 0.53, 0.85],
             areas_um2=[survey_area_um2(22, 1e8, e) for e in (0.46, 0.53, 0.85)], rate_gsps=0.1),
    "Accelergy ADC plug-in's survey-based best ADC at 22 nm: 4 b 0.46, 6 b 0.53, 8 b 0.85 pJ",
    source="Accelergy-Project/accelergy-adc-plug-in model.py (Murmann survey 1997-2023), evaluated at 22 nm, "
    "100 MS/s (round2 anchors §1.2.3); areas from the plug-in's area fit (survey_area_um2)",
)  # fmt: skip
ADCS.add(
    "survey_32nm",
    TableADC(bits=[4, 6, 8], energies_pj=[0.92, 1.07, 1.71],
             areas_um2=[survey_area_um2(32, 1e8, e) for e in (0.92, 1.07, 1.71)], rate_gsps=0.1),
    "Accelergy ADC plug-in's survey-based best ADC at 32 nm: 4 b 0.92, 6 b 1.07, 8 b 1.71 pJ",
    source="Accelergy-Project/accelergy-adc-plug-in model.py, evaluated at 32 nm, 100 MS/s (round2 anchors §1.2.3); "
    "areas from the plug-in's area fit (survey_area_um2)",
)  # fmt: skip
ADCS.add(
    "mnsim_isaac",
    TableADC(bits=[8], energies_pj=[15.6], areas_um2=[1200], rate_gsps=1.28),
    "MNSIM 2.0's ISAAC ADC entry: 2 mW x (b + 2)/1.28 GS/s = 15.6 pJ at 8 b",
    source="thu-nics/MNSIM-2.0 MNSIM/Hardware_Model/ADC.py l.108-122 (ADC 2), reading of round2 anchors §1.2.4",
)
ADCS.add(
    "schreier_180db",
    SchreierADC(fom_db=180.0),
    "Schreier FoM 180 dB at 1 GS/s, 22 nm: 8 b ~49 fJ (flat-FoM thermal-noise regime)",
    source="Schreier FoM definition (Murmann ADC survey); Accelergy ADC plug-in foms_sndr2energy; area fit "
    "survey_area_um2",
)
ADCS.add(
    "walden_5fj",
    WaldenADC(fom_fj=5.0),
    "Walden FoM 5 fJ/conversion step (typical good SAR, 1-10 fJ/step): 8 b 1.28 pJ",
    source="Walden FoM E = FoM_W·2^ENOB; typical SAR range 1-10 fJ/step (round2 anchors §1.2.6, [R]); area fit "
    "survey_area_um2",
)


def adc_model(name: str) -> ADCModel:
    """The ADC preset ``name`` (ConfigError with the allowed names if unknown)."""
    return ADCS.get(name)
