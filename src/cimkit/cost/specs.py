"""Hardware specs: named, cited presets of a CIM chip or a digital accelerator, every number a field.

A :class:`HardwareSpec` is either ``kind = "cim"`` (Linear/Conv layers on crossbar arrays with
their periphery, everything else on the chip's digital units) or ``kind = "digital"`` (a systolic
array of ``pe_rows x pe_cols`` MAC units, weight-stationary). Component models are named by preset:
``adc`` (:data:`cimkit.cost.adc.ADCS`), ``digital`` (arithmetic, :data:`cimkit.cost.digital.DIGITAL`),
``dram`` (:data:`cimkit.cost.digital.MEMORIES`). Units are in the field names (``_ns``, ``_uw``,
``_um2``...), conductances in µS, ``*_f2`` in squared feature sizes ``F`` (``feature_nm``).

The NeuroSim-derived presets take NeuroSim V1.4's defaults (``Param.cpp`` @ac828e6: 128x128
subarrays, 1 bit per cell, 8 columns per ADC, 5-bit flash ADC from multi-level sense amplifiers,
1T1R RRAM with R_on = 100 kΩ and on/off 17, V_read 0.55 V at 22 nm, 1T1R cell 4F x 12F, clock
1 GHz, calibration factors of ``validated = true``: post-layout energy x1.22, sensing latency x1.4).
NeuroSim has no DAC (bit-serial inputs on the word lines); its word-line drivers are priced here as
MNSIM's/ISAAC's 1-bit DAC (3.9 µW, 0.166 µm²). Its digital units come from NeuroSim's own digital
systolic-array baseline at the same node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cimkit.config import Config, as_enum, check_range
from cimkit.cost.adc import ADCS, ADCModel
from cimkit.cost.digital import DIGITAL, MEMORIES, DigitalModel, MemoryModel
from cimkit.errors import ConfigError
from cimkit.registry import Registry

__all__ = ["SPECS", "HardwareKind", "HardwareSpec", "WeightPairing", "get_spec"]


class HardwareKind(str, Enum):
    CIM = "cim"
    DIGITAL = "digital"


class WeightPairing(str, Enum):
    """How a signed weight sits on cells: two devices (``G+ − G−``) or one plus a digital offset."""

    DIFFERENTIAL = "differential"
    OFFSET = "offset"


@dataclass
class HardwareSpec(Config):
    """One chip (see the module docstring). Crossbar fields are ignored by ``kind = "digital"``.

    * bits: ``w_bits`` / ``a_bits`` are the widths float weights and activations get on a CIM chip
      (its cells and converters hold integers); a digital accelerator computes every layer at the
      layer's own widths (float layers with the float units);
    * memory: ``buffer_pj_per_bit`` (read or write), ``buffer_um2_per_bit``, ``buffer_kib`` (global
      buffer capacity: a digital accelerator refetches weights from DRAM every inference when the
      model's weights do not fit), ``interconnect_fj_per_bit_mm`` (wire capacitance per bit and mm,
      charged at ``vdd_v``: C·V²) plus ``interconnect_pj_per_bit`` per bit (routers);
    * digital units: ``pe_rows x pe_cols`` MAC units at ``clock_ghz`` (the PE array of a digital
      accelerator; a CIM chip's vector unit for elementwise work and attention products);
    * crossbar: ``tile_rows x tile_cols`` arrays, ``bits_per_cell``, ``weight_pair``, ``parallel_rows``
      rows read (and converted) at once (0: all rows of a tile, as the simulator does),
      ``cols_per_adc`` columns multiplexed onto one ADC, ``bit_serial`` inputs (one bit per cycle on
      the word lines) or ``dac_bits``-bit DACs, the ``adc`` model at ``adc_bits``;
    * cells: read voltage ``v_read_v``, ``g_on_us`` and ``on_off`` (conductance ratio), the fraction
      ``input_density`` of input bits that are 1 and ``weight_density`` of cells in the on state (the
      mean column conductance; NeuroSim's average-resistance estimate takes half on, half off),
      ``t_settle_ns`` of array settling before each read's conversions, ``t_sense_ns`` during which
      the cells of a column conduct while it is sampled (NeuroSim's minimum column latency, 1 ns),
      cell area ``cell_area_f2``;
    * ``dac_uw`` / ``dac_um2``: power while driving and area of a 1-bit row driver (a ``b``-bit DAC:
      ``dac_uw · 2^(b−1)``, MNSIM's scaling of ISAAC's DACs);
    * calibration: ``energy_factor`` multiplies every energy, ``sensing_latency_factor`` the ADC time.
    """

    kind: HardwareKind = HardwareKind.CIM
    description: str = ""
    source: str = ""
    node_nm: float = 22.0
    feature_nm: float = 40.0
    vdd_v: float = 0.85
    clock_ghz: float = 1.0
    digital: str = "neurosim_22nm"
    dram: str = "lpddr4"
    w_bits: int = 8
    a_bits: int = 8
    buffer_pj_per_bit: float = 0.00255
    buffer_um2_per_bit: float = 632.8 / 512
    buffer_kib: float = 256.0
    interconnect_fj_per_bit_mm: float = 12.0
    interconnect_pj_per_bit: float = 0.0
    pe_rows: int = 1
    pe_cols: int = 128
    cell: str = "rram"
    tile_rows: int = 128
    tile_cols: int = 128
    bits_per_cell: int = 1
    weight_pair: WeightPairing = WeightPairing.OFFSET
    parallel_rows: int = 0
    cols_per_adc: int = 8
    bit_serial: bool = True
    dac_bits: int = 1
    adc: str = "neurosim_flash_22nm"
    adc_bits: int = 5
    v_read_v: float = 0.55
    g_on_us: float = 10.0
    on_off: float = 17.0
    input_density: float = 0.5
    weight_density: float = 0.5
    t_settle_ns: float = 0.0
    t_sense_ns: float = 1.0
    cell_area_f2: float = 48.0
    dac_uw: float = 3.9
    dac_um2: float = 0.166
    energy_factor: float = 1.0
    sensing_latency_factor: float = 1.0

    def __post_init__(self) -> None:
        self.kind = as_enum("kind", self.kind, HardwareKind)
        self.weight_pair = as_enum("weight_pair", self.weight_pair, WeightPairing)
        for name in ("node_nm", "feature_nm", "vdd_v", "clock_ghz", "buffer_kib", "on_off", "cell_area_f2"):
            check_range(name, getattr(self, name), 0.0, lo_open=True)
        for name in ("buffer_pj_per_bit", "buffer_um2_per_bit", "interconnect_fj_per_bit_mm", "interconnect_pj_per_bit",
                     "v_read_v", "g_on_us",
                     "t_settle_ns", "t_sense_ns", "dac_uw", "dac_um2"):  # fmt: skip
            check_range(name, getattr(self, name), 0.0)
        check_range("energy_factor", self.energy_factor, 0.0, lo_open=True)
        check_range("sensing_latency_factor", self.sensing_latency_factor, 0.0, lo_open=True)
        for name in ("w_bits", "a_bits"):
            check_range(name, getattr(self, name), 1, 32)
        for name in ("pe_rows", "pe_cols", "tile_rows", "tile_cols", "cols_per_adc"):
            check_range(name, getattr(self, name), 1, 1 << 16)
        check_range("bits_per_cell", self.bits_per_cell, 1, 16)
        check_range("parallel_rows", self.parallel_rows, 0, self.tile_rows)
        check_range("dac_bits", self.dac_bits, 1, 16)
        check_range("adc_bits", self.adc_bits, 1, 24)
        check_range("input_density", self.input_density, 0.0, 1.0)
        check_range("weight_density", self.weight_density, 0.0, 1.0)
        for name, reg in (("adc", ADCS), ("digital", DIGITAL), ("dram", MEMORIES)):
            if getattr(self, name) not in reg:
                raise ConfigError(f"{name}: {reg_error(reg, getattr(self, name))}")

    # ------------------------------------------------------------------ component models

    @property
    def adc_model(self) -> ADCModel:
        return ADCS.get(self.adc)

    @property
    def arith(self) -> DigitalModel:
        return DIGITAL.get(self.digital)

    @property
    def memory(self) -> MemoryModel:
        return MEMORIES.get(self.dram)

    @property
    def is_cim(self) -> bool:
        return self.kind == HardwareKind.CIM

    # ------------------------------------------------------------------ derived cell figures

    @property
    def cell_area_um2(self) -> float:
        return self.cell_area_f2 * (self.feature_nm * 1e-3) ** 2

    @property
    def g_mean_us(self) -> float:
        """Mean cell conductance: ``d · G_on + (1 − d) · G_on / on_off`` (µS)."""
        g_off = 0.0 if math.isinf(self.on_off) else self.g_on_us / self.on_off
        return self.weight_density * self.g_on_us + (1.0 - self.weight_density) * g_off

    def slices_for(self, w_bits: int) -> int:
        """Cells per weight device: ``ceil(m / bits_per_cell)`` with ``m`` the bits a device holds
        (``w_bits − 1`` magnitude bits in a differential pair, ``w_bits`` with an offset; binary and
        ternary weights: 1)."""
        m = w_bits - 1 if self.weight_pair == WeightPairing.DIFFERENTIAL else w_bits
        return max(1, -(-max(m, 1) // self.bits_per_cell))

    @property
    def devices(self) -> int:
        return 2 if self.weight_pair == WeightPairing.DIFFERENTIAL else 1

    def planes_for(self, a_bits: int) -> int:
        """Input cycles per conversion batch: the input bits when bit-serial, else 1."""
        return a_bits if self.bit_serial else 1

    def label(self) -> str:
        return f"{self.kind.value}:{self.adc if self.is_cim else self.digital}"


def reg_error(reg: Registry[Any], name: str) -> str:
    """The registry's unknown-name message (did-you-mean and the allowed names)."""
    try:
        reg.get(name)
    except ConfigError as e:
        return str(e)
    return ""  # pragma: no cover - only called for unknown names


SPECS: Registry[HardwareSpec] = Registry("hardware spec")

_NS = "DNN_NeuroSim_V1.4 Inference_pytorch/NeuroSIM/Param.cpp (@ac828e6): defaults l.101-378"
_DAC = "1-bit DAC 3.9 µW / 0.166 µm² (ISAAC, as in MNSIM 2.0 DAC.py and hwcomponents-library isaac.py l.648-655)"
_SYS22 = "digital units and RF buffer (0.00255 pJ/bit, 632.8 µm² per 512 bits) of NeuroSim's 22 nm digital systolic array"
_SYS32 = "digital units and RF buffer (0.00477 pJ/bit, 1338.8 µm² per 512 bits) of NeuroSim's 32 nm digital systolic array"
_NOC = "NoC 12 fF/mm/bit (CACTI 6.0, NeuroSim systolic V1.0 parameters.py); vdd from NeuroSim Technology.cpp"

_RRAM22 = HardwareSpec(
    description="RRAM 1T1R CIM, 22 nm, NeuroSim V1.4 defaults: 128x128 arrays, 1 b/cell, 5-bit flash ADC per 8 columns",
    source=f"{_NS}; {_DAC}; {_SYS22}; {_NOC}",
    energy_factor=1.22,
    sensing_latency_factor=1.4,
)
SPECS.add("rram_22nm", _RRAM22, _RRAM22.description, source=_RRAM22.source)

_RRAM32 = _RRAM22.replace(
    description="RRAM 1T1R CIM, 32 nm, NeuroSim V1.4 defaults (V_read 0.51 V, F = 56 nm)",
    node_nm=32.0, feature_nm=56.0, vdd_v=0.9, digital="neurosim_32nm", adc="neurosim_flash_32nm", v_read_v=0.51,
    buffer_pj_per_bit=0.00477, buffer_um2_per_bit=1338.8 / 512, source=f"{_NS}; {_DAC}; {_SYS32}; {_NOC}",
)  # fmt: skip
SPECS.add("rram_32nm", _RRAM32, _RRAM32.description, source=_RRAM32.source)

_PCM = "cell conductance of cimkit's pcm device preset (g_max 25 µS, g_min 0: Nandakumar et al. ICECS 2019)"
_PCM22 = _RRAM22.replace(
    description="PCM 1T1R CIM, 22 nm: NeuroSim V1.4 array and periphery defaults with a 25 µS PCM cell",
    cell="pcm", g_on_us=25.0, on_off=math.inf, source=f"{_NS}; {_PCM}; {_DAC}; {_SYS22}; {_NOC}",
)  # fmt: skip
SPECS.add("pcm_22nm", _PCM22, _PCM22.description, source=_PCM22.source)
_PCM32 = _RRAM32.replace(
    description="PCM 1T1R CIM, 32 nm: NeuroSim V1.4 array and periphery defaults with a 25 µS PCM cell",
    cell="pcm", g_on_us=25.0, on_off=math.inf, source=f"{_NS}; {_PCM}; {_DAC}; {_SYS32}; {_NOC}",
)  # fmt: skip
SPECS.add("pcm_32nm", _PCM32, _PCM32.description, source=_PCM32.source)

_SRAM22 = _RRAM22.replace(
    description="SRAM CIM (6T, 10F x 28F), 22 nm, NeuroSim V1.4 SRAM mode; no cell read current modelled",
    cell="sram", g_on_us=0.0, on_off=math.inf, cell_area_f2=280.0,
    source=f"{_NS} (SRAM cell 10F x 28F l.279-281, on/off infinite as in manual Table VII); {_DAC}; {_SYS22}; {_NOC}",
)  # fmt: skip
SPECS.add("sram_22nm", _SRAM22, _SRAM22.description, source=_SRAM22.source)

_T7 = "NeuroSim V1.4 manual §11 Table VII (VGG-8/CIFAR-10, 8b x 8b, 1 b/cell, 128x128, RRAM 22 nm, on/off 17, 4-bit ADC)"
for _pr in (32, 64):
    _spec = _RRAM22.replace(
        description=f"NeuroSim V1.4 Table VII: RRAM 22 nm, 4-bit flash ADC, parallel read of {_pr} rows",
        adc_bits=4, parallel_rows=_pr, source=f"{_T7}; otherwise {_RRAM22.source}",
    )  # fmt: skip
    SPECS.add(f"neurosim_table7_pr{_pr}", _spec, _spec.description, source=_spec.source)

_ISAAC = HardwareSpec(
    description="ISAAC-like RRAM CIM, 32 nm: 128x128 arrays, 2 b/cell, one 8-bit SAR ADC per array (128 columns), "
    "1-bit DACs, eDRAM buffer, 100 ns crossbar read",
    source="Shafiee et al. ISCA 2016 component numbers as curated in Accelergy-Project/hwcomponents-library "
    "library/isaac.py (ADC l.308-314, DAC l.648-655, eDRAM buffer l.18-26: 0.08 pJ/bit, 83000 µm² per 64 KB, "
    "router 20.74 pJ per 256 bits); cell read current not modelled; digital units of NeuroSim's 32 nm systolic array",
    node_nm=32.0, feature_nm=56.0, vdd_v=0.9, digital="neurosim_32nm", bits_per_cell=2, cols_per_adc=128,
    adc="isaac_32nm", adc_bits=8, t_settle_ns=100.0, g_on_us=0.0, buffer_pj_per_bit=20.45 / 256,
    buffer_um2_per_bit=83000.0 / (64 * 1024 * 8), buffer_kib=64.0, interconnect_fj_per_bit_mm=0.0,
    interconnect_pj_per_bit=20.74 / 256,
    clock_ghz=1.2, v_read_v=0.0,
)  # fmt: skip
SPECS.add("isaac_32nm", _ISAAC, _ISAAC.description, source=_ISAAC.source)

_SYSTOLIC = "NeuroSim digital systolic array V1.0 (tag 2DInferenceDigitalSystolicArrayV1.0 README/parameters.py)"
_DIG22 = HardwareSpec(
    kind=HardwareKind.DIGITAL,
    description="digital systolic array (NeuroSim's TPU-like baseline), 22 nm: 16x16 8-bit MACs at 200 MHz, "
    "256 KiB RF buffer, LPDDR4",
    source=f"{_SYSTOLIC}: 16x16 edge array, 200 MHz, 22 nm multiplier/adder/RF, 256 KB buffer banks, LPDDR4 1.2 pJ/bit; "
    f"{_NOC}",
    pe_rows=16, pe_cols=16, clock_ghz=0.2,
)  # fmt: skip
SPECS.add("systolic_22nm", _DIG22, _DIG22.description, source=_DIG22.source)
_DIG32 = _DIG22.replace(
    description="digital systolic array (NeuroSim's TPU-like baseline), 32 nm: 16x16 MACs at 200 MHz, LPDDR4",
    node_nm=32.0, feature_nm=56.0, vdd_v=0.9, digital="neurosim_32nm", buffer_pj_per_bit=0.00477,
    buffer_um2_per_bit=1338.8 / 512, source=_DIG22.source.replace("22 nm", "32 nm"),
)  # fmt: skip
SPECS.add("systolic_32nm", _DIG32, _DIG32.description, source=_DIG32.source)
_H45 = _DIG22.replace(
    description="digital 16x16 MAC array with Horowitz 45 nm arithmetic and SRAM (32 KB: 20 pJ per 64 bits), LPDDR4",
    node_nm=45.0, feature_nm=45.0, vdd_v=0.9, digital="horowitz_45nm", buffer_pj_per_bit=20.0 / 64,
    buffer_um2_per_bit=0.0, buffer_kib=32.0,
    source="Horowitz ISSCC 2014 table (round2 anchors §1.4, [R]): arithmetic, 32 KB SRAM read 20 pJ per 64 bits "
    f"(no SRAM area given); array organisation and LPDDR4 of {_SYSTOLIC}",
)  # fmt: skip
SPECS.add("horowitz_45nm", _H45, _H45.description, source=_H45.source)


def get_spec(spec: str | HardwareSpec | dict[str, Any] | None, *, adc: str | None = None,
             **overrides: Any) -> HardwareSpec:  # fmt: skip
    """A :class:`HardwareSpec` from a preset name, a spec, or a table of fields (``base`` names a
    preset to start from); ``adc`` swaps the ADC model; ``overrides`` change other fields."""
    if spec is None:
        spec = "rram_22nm"
    if isinstance(spec, str):
        out = SPECS.get(spec)
    elif isinstance(spec, HardwareSpec):
        out = spec
    elif isinstance(spec, dict):
        table = dict(spec)
        base = SPECS.get(table.pop("base")) if "base" in table else HardwareSpec()
        out = base.replace(**table)
    else:
        raise ConfigError(f"spec: expected a preset name, a HardwareSpec or a table, got {type(spec).__name__}")
    changes = {**overrides, **({"adc": adc} if adc else {})}
    return out.replace(**changes) if changes else out
