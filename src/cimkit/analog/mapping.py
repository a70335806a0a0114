"""How a layer's weights and activations map onto crossbar tiles and their periphery.

A layer's weight matrix (``out x in``; a conv's ``in`` is ``C * kh * kw``) is split into row blocks
("tiles") of at most ``tile_rows`` rows; each tile's partial sums go through their own ADC and are
added digitally. Conv layers split rows at input-channel boundaries (a tile holds
``ceil(C / T)`` whole channels, ``T`` the number of tiles) so a tile is one group of a grouped
convolution. Columns are split in blocks of ``tile_cols`` outputs (they matter for per-tile weight
scaling and the word-line IR drop; column tiles never mix in the analog domain).

Weights ``w`` become normalised codes ``u = w / w_max`` in ``[-1, 1]`` (``w_max`` per layer, tile or
column, undone digitally) and then conductances:

* ``differential``: ``G+ = g_min + max(u, 0) g_range``, ``G- = g_min + max(-u, 0) g_range``; the
  column reads ``(I+ - I-)``.
* ``offset``: one device, ``G = g_min + (u + 1)/2 g_range``; the digital periphery subtracts the
  offset ``(2 g_min / g_range + 1) * sum(x)`` (computed from the digital inputs).

With ``slice_bits > 0`` each device's code is quantized to ``n_slices * slice_bits`` bits and split
into ``n_slices`` cells of ``slice_bits`` bits (least-significant slice first); every slice is read
by its own ADC conversion and the results are combined by shift-and-add:
``u = sum_s c_s u_s`` with ``c_s = (2^b - 1) 2^(b s) / (2^(n b) - 1)``.

Inputs pass a DAC of ``dac_bits`` (symmetric, ``2^(bits-1) - 1`` levels per sign) over a range that
is ``fixed``, ``calibrated`` (percentile of |x| on data), ``learned`` (trained with an STE) or
``dynamic`` (per input vector: its abs-max, as aihwkit's ``NoiseManagementType.ABS_MAX``).
``bit_serial`` applies the DAC code one magnitude bit per cycle (sign-magnitude pulses), one ADC
conversion per bit, and shift-and-adds digitally. The ADC digitises ``z = sum_i x_i A_i`` in
normalised units (inputs in [-1, 1] times normalised conductances), over ``[-adc_range, adc_range]``
(``fixed``, ``calibrated`` or ``learned``) with ``adc_bits`` and clipping. ``out_noise`` is the std of
additive Gaussian noise on ``z`` per conversion (aihwkit's ``out_noise``). Bias is digital.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.registry import Registry

__all__ = [
    "MAPPINGS",
    "Compensation",
    "ConvRoute",
    "MappingConfig",
    "RangeMode",
    "WeightPair",
    "WeightScaling",
    "mapping_preset",
    "slice_codes",
    "slice_coefficients",
]


class WeightPair(str, Enum):
    """How a signed weight becomes conductance(s)."""

    DIFFERENTIAL = "differential"
    OFFSET = "offset"


class WeightScaling(str, Enum):
    """The group over which ``w_max`` (weight -> g_max) is taken and undone digitally."""

    LAYER = "layer"
    TILE = "tile"
    COLUMN = "column"


class RangeMode(str, Enum):
    """How a DAC / ADC range is set."""

    FIXED = "fixed"
    CALIBRATED = "calibrated"
    LEARNED = "learned"
    DYNAMIC = "dynamic"  # DAC only: per input vector abs-max


class Compensation(str, Enum):
    """Digital drift compensation from a reference read (Joshi et al. 2020 / aihwkit)."""

    NONE = "none"
    GLOBAL = "global"
    COLUMN = "column"


class ConvRoute(str, Enum):
    """How tiled convolutions are computed (both exact): grouped convolution or unfold + matmul."""

    AUTO = "auto"
    GROUPED = "grouped"
    UNFOLD = "unfold"


@dataclass
class MappingConfig(Config):
    """Crossbar mapping and periphery of an analog layer (see the module docstring).

    ``*_bits = 0`` means an ideal converter (no quantization and no clipping). ``adc_range`` and
    ``dac_range`` are the fixed values or the initial values before calibration/learning
    (``adc_range`` in normalised units: inputs in [-1, 1] times conductances in [0, 1]).
    ``fast_noise`` draws per-read Gaussian noise as a window at a random offset of a pre-sampled
    Gaussian table (every read's entries are distinct, so exact N(0, 1) marginals and independent
    within a read; about 10x cheaper than fresh sampling), and so does hardware-aware training's
    weight noise; false samples afresh every read.
    """

    tile_rows: int = 256
    tile_cols: int = 256
    pair: WeightPair = WeightPair.DIFFERENTIAL
    scaling: WeightScaling = WeightScaling.COLUMN
    n_slices: int = 1
    slice_bits: int = 0
    dac_bits: int = 8
    dac_range_mode: RangeMode = RangeMode.DYNAMIC
    dac_range: float = 1.0
    dac_percentile: float = 99.99
    bit_serial: bool = False
    adc_bits: int = 8
    adc_range_mode: RangeMode = RangeMode.FIXED
    adc_range: float = 10.0
    adc_percentile: float = 99.99
    out_noise: float = 0.04
    compensation: Compensation = Compensation.GLOBAL
    conv_route: ConvRoute = ConvRoute.AUTO
    fast_noise: bool = True

    def __post_init__(self) -> None:
        check_range("tile_rows", self.tile_rows, 1, 1 << 16)
        check_range("tile_cols", self.tile_cols, 1, 1 << 16)
        check_range("n_slices", self.n_slices, 1, 16)
        check_range("slice_bits", self.slice_bits, 0, 16)
        if self.n_slices > 1 and self.slice_bits == 0:
            raise ConfigError("slice_bits: 0 with n_slices > 1; allowed: >= 1 bit per slice")
        if self.n_slices * self.slice_bits > 24:
            raise ConfigError(
                f"n_slices * slice_bits: {self.n_slices * self.slice_bits} is out of range; allowed: [0, 24]"
            )
        check_range("dac_bits", self.dac_bits, 0, 24)
        if self.dac_bits == 1:
            raise ConfigError("dac_bits: 1 is not allowed; allowed: 0 (ideal) or >= 2 (sign + magnitude)")
        check_range("adc_bits", self.adc_bits, 0, 24)
        if self.adc_bits == 1:
            raise ConfigError("adc_bits: 1 is not allowed; allowed: 0 (ideal) or >= 2 (sign + magnitude)")
        if self.adc_range_mode == RangeMode.DYNAMIC:
            raise ConfigError("adc_range_mode: 'dynamic' is not allowed; allowed: fixed, calibrated, learned")
        check_range("dac_range", self.dac_range, 0.0, lo_open=True)
        check_range("adc_range", self.adc_range, 0.0, lo_open=True)
        check_range("dac_percentile", self.dac_percentile, 0.0, 100.0, lo_open=True)
        check_range("adc_percentile", self.adc_percentile, 0.0, 100.0, lo_open=True)
        check_range("out_noise", self.out_noise, 0.0)
        if self.bit_serial and self.dac_bits == 0:
            raise ConfigError("bit_serial: needs dac_bits >= 2 (the bits to apply serially)")

    @property
    def ideal_adc(self) -> bool:
        """True when each conversion is exact (no quantization, clipping or output noise)."""
        return self.adc_bits == 0 and self.out_noise == 0.0

    @property
    def n_planes(self) -> int:
        """Input cycles per conversion batch: magnitude bits when bit-serial, else 1."""
        return self.dac_bits - 1 if self.bit_serial else 1


MAPPINGS: Registry[MappingConfig] = Registry("mapping preset")
MAPPINGS.add(
    "ideal",
    MappingConfig(dac_bits=0, adc_bits=0, out_noise=0.0, compensation=Compensation.NONE),
    "256x256 tiles, differential pairs, ideal DAC/ADC, no output noise",
)
MAPPINGS.add(
    "standard",
    MappingConfig(),
    "256x256 tiles, differential pairs, per-column scaling, 8-bit DAC (dynamic) and ADC (range 10), "
    "output noise 0.04, global drift compensation (the 8-bit IO of aihwkit's PCM inference examples)",
)
MAPPINGS.add(
    "calibrated",
    MappingConfig(dac_range_mode=RangeMode.CALIBRATED, adc_range_mode=RangeMode.CALIBRATED),
    "standard, but DAC and ADC ranges calibrated per layer from data (99.99th percentile)",
)
MAPPINGS.add(
    "learned",
    MappingConfig(dac_range_mode=RangeMode.LEARNED, adc_range_mode=RangeMode.LEARNED),
    "standard, but DAC and ADC ranges learned in hardware-aware training (STE)",
)
MAPPINGS.add(
    "sliced_bitserial",
    MappingConfig(n_slices=4, slice_bits=2, bit_serial=True),
    "standard with 8-bit weights over 4 slices of 2-bit cells and 8-bit bit-serial inputs",
)
MAPPINGS.add(
    "afm",
    MappingConfig(dac_bits=8, dac_range_mode=RangeMode.LEARNED, adc_bits=8, adc_range=14.0, out_noise=0.0),
    "the I/O of Analog Foundation Models (Büchel et al. 2025): 8-bit inputs over a learned range, 8-bit outputs "
    "bounded at 14 (output noise not included: set out_noise to add it)",
    source="J. Büchel et al., NeurIPS 2025, arXiv:2505.09663; IBM/analog-foundation-models training config "
    "(forward_inp_res = forward_out_res = 254, forward_out_bound = 14, learned input ranges)",
)
MAPPINGS.add(
    "offset",
    MappingConfig(pair=WeightPair.OFFSET, adc_range_mode=RangeMode.CALIBRATED),
    "one device per weight plus a digitally subtracted offset; ADC range calibrated (the offset current "
    "needs a wider range)",
)


def mapping_preset(name: str, **overrides: object) -> MappingConfig:
    """A copy of the mapping preset ``name`` with some fields changed (validated)."""
    return MAPPINGS.get(name).replace(**overrides)


def slice_coefficients(n_slices: int, slice_bits: int, device: torch.device | str = "cpu") -> Tensor:
    """Shift-and-add weights ``c_s = (2^b - 1) 2^(b s) / (2^(n b) - 1)`` (sum to 1); ``[1.]`` if unsliced."""
    if slice_bits == 0:
        return torch.ones(1, device=device)
    b, n = slice_bits, n_slices
    s = torch.arange(n, device=device, dtype=torch.float64)
    c = (2.0**b - 1.0) * torch.pow(2.0, b * s) / (2.0 ** (n * b) - 1.0)
    return c.float()


def slice_codes(v: Tensor, n_slices: int, slice_bits: int) -> Tensor:
    """Split codes ``v`` in [0, 1] into ``(n_slices, *v.shape)`` slice codes in [0, 1].

    ``v`` is rounded to ``n * b`` bits: ``q = round(v (2^(n b) - 1))``; slice ``s`` holds bits
    ``[b s, b (s + 1))`` as ``q_s / (2^b - 1)``, so ``sum_s c_s v_s == q / (2^(n b) - 1)``.
    Without slicing (``slice_bits == 0``) the result is ``v[None]`` unchanged.
    """
    if slice_bits == 0:
        return v.unsqueeze(0)
    total = n_slices * slice_bits
    q = torch.round(v.clamp(0.0, 1.0) * (2.0**total - 1.0))  # exact integers in float32 (<= 24 bits)
    shape = (n_slices,) + (1,) * v.dim()
    div = torch.pow(2.0, slice_bits * torch.arange(n_slices, device=v.device, dtype=v.dtype)).view(shape)
    q_s = torch.remainder(torch.floor(q.unsqueeze(0) / div), 2.0**slice_bits)  # (S, *v.shape)
    return q_s / (2.0**slice_bits - 1.0)
