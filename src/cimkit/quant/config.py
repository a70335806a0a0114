"""Quantization config (one flat dataclass, per-layer overrides by module-name pattern) and presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError, did_you_mean
from cimkit.nn.walk import FIRST, LAST, LayerRef, matches
from cimkit.quant.observers import ObserverKind
from cimkit.registry import Registry


class WMode(str, Enum):
    """How weights are quantized."""

    AFFINE = "affine"  # uniform grid, w_bits in 2..16 (symmetric or asymmetric)
    BINARY = "binary"  # XNOR-Net: sign(w) · mean|w| (per channel), 1 bit
    TERNARY_TWN = "ternary_twn"  # TWN: threshold 0.7·mean|w|, 2 bits of storage (log2 3 = 1.58 bits)
    TERNARY_ABSMEAN = "ternary_absmean"  # BitNet b1.58: RoundClip(w / mean|w|, -1, 1), 2 bits of storage


class AGranularity(str, Enum):
    """Over what an activation grid is taken."""

    TENSOR = "tensor"  # one grid per layer input, calibrated on data (static)
    TOKEN = "token"  # one grid per token (row of the feature dimension), computed at run time (dynamic)


MODE_BITS = {WMode.BINARY: 1, WMode.TERNARY_TWN: 2, WMode.TERNARY_ABSMEAN: 2}

# fields a per-layer override may set (everything except the pattern tables themselves)
_LAYER_FIELDS = (
    "w_bits", "a_bits", "w_mode", "per_channel", "w_symmetric", "a_symmetric", "observer",
    "w_observer", "percentile", "lsq", "group_size", "a_granularity",
)  # fmt: skip



@dataclass
class QuantConfig(Config):
    """What to quantize and how. Weight and activation bits are independent.

    * ``w_bits``: weight bits, 1-16. ``w_bits = 1`` means binary weights; ``w_mode`` binary/ternary
      set ``w_bits`` to their storage bits (1 / 2).
    * ``a_bits``: bits of every quantized layer's *input* activation, 2-16, or ``None`` to leave
      activations in float (weight-only quantization; write ``a_bits = 0`` in TOML). Non-negative inputs (post-ReLU, found during
      calibration) use an unsigned grid ``[0, 2^b-1]``; signed inputs use ``a_symmetric``.
    * ``w_mode``: ``affine`` (uniform), ``binary`` (XNOR-Net), ``ternary_twn`` (TWN),
      ``ternary_absmean`` (BitNet b1.58).
    * ``per_channel``: one weight scale per output channel (else one per tensor).
    * ``w_symmetric`` / ``a_symmetric``: signed narrow grid with zero point 0, else an unsigned grid
      with a zero point.
    * ``observer``: activation range estimator (``minmax``, ``percentile``, ``mse``); ``w_observer``
      does the same for affine weights (``None`` = ``minmax``). ``percentile`` is used by the
      percentile observer.
    * ``lsq``: learn the step sizes (Esser et al., ICLR 2020) for affine weights and activations;
      they are initialized from the observers.
    * ``group_size``: per-group weight grids (Q-BERT, Shen et al. AAAI 2020; the ``g`` of GPTQ/AWQ
      "W4 g128"): each output row's inputs (the flattened ``C_in·k`` of a convolution) are split into
      consecutive groups of ``group_size``, each with its own scale (and zero point), so a layer has
      ``out · in / group_size`` grids. 0 = off (per channel / per tensor). It must divide the fan-in
      of every quantized layer; ``group_size = in_features`` is exactly per-channel quantization.
    * ``a_granularity``: ``tensor`` (one activation grid per layer input, calibrated) or ``token``
      (dynamic: one grid per token, i.e. per vector along the feature dimension, computed at run
      time from that token's abs-max (symmetric) or min/max (asymmetric); no calibration; as
      BitNet's per-token absmax 8-bit activations and LLM.int8()/SmoothQuant's per-token scales).
    * ``embeddings``: also quantize ``nn.Embedding`` tables (one grid per embedding row, weights
      only); by default embeddings stay in float. LayerNorm / RMSNorm always stay in float.
    * ``overrides``: module-name pattern (``fnmatch``; an exact name is a pattern too; ``@first`` /
      ``@last`` name the first / last quantizable layer) -> fields to change for matching layers,
      applied in order. An override that sets ``w_bits`` without ``w_mode`` picks ``binary`` for 1
      bit and ``affine`` otherwise (so ``{"@last": {"w_bits": 8}}`` works in a binary network).
    * ``skip``: patterns of layers left in float.
    """

    w_bits: int = 8
    a_bits: int | None = 8
    w_mode: WMode = WMode.AFFINE
    per_channel: bool = True
    w_symmetric: bool = True
    a_symmetric: bool = False
    observer: ObserverKind = ObserverKind.MINMAX
    w_observer: ObserverKind | None = None
    percentile: float = 99.99
    lsq: bool = False
    group_size: int = 0
    a_granularity: AGranularity = AGranularity.TENSOR
    embeddings: bool = False
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.w_mode = as_enum("w_mode", self.w_mode, WMode)
        self.a_granularity = as_enum("a_granularity", self.a_granularity, AGranularity)
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ConfigError(f"group_size: expected an integer, got {self.group_size!r}")
        check_range("group_size", self.group_size, 0)
        if self.group_size and not self.per_channel:
            raise ConfigError("group_size: groups are taken within each output row; needs per_channel = true")
        if self.a_granularity is AGranularity.TOKEN and self.lsq:
            raise ConfigError("lsq: per-token activation grids are computed at run time and have no step size to "
                              "learn; allowed with a_granularity = 'token': lsq = false")  # fmt: skip
        self.observer = as_enum("observer", self.observer, ObserverKind)
        if self.w_observer is not None:
            self.w_observer = as_enum("w_observer", self.w_observer, ObserverKind)
        check_range("w_bits", self.w_bits, 1, 16)
        if isinstance(self.w_bits, float):
            raise ConfigError(f"w_bits: expected an integer, got {self.w_bits!r}")
        if self.w_mode is WMode.AFFINE and self.w_bits == 1:
            self.w_mode = WMode.BINARY
        if self.w_mode in MODE_BITS:
            self.w_bits = MODE_BITS[self.w_mode]
        if self.a_bits == 0 and not isinstance(self.a_bits, bool):
            self.a_bits = None  # TOML has no null: a_bits = 0 means float activations
        if self.a_bits is not None:
            check_range("a_bits", self.a_bits, 2, 16)
        check_range("percentile", self.percentile, 50.0, 100.0, lo_open=True)
        if not isinstance(self.overrides, dict):
            raise ConfigError(f"overrides: expected a table of pattern -> fields, got {self.overrides!r}")
        for pat, ov in self.overrides.items():
            if not isinstance(ov, dict):
                raise ConfigError(f"overrides.{pat}: expected a table of fields, got {ov!r}")
            for k in ov:
                if k not in _LAYER_FIELDS:
                    raise ConfigError(
                        f"overrides.{pat}.{k}: not a per-layer field{did_you_mean(k, _LAYER_FIELDS)}; "
                        f"allowed: {', '.join(_LAYER_FIELDS)}"
                    )
            self._merged(self._layer_dict(), ov, where=f"overrides.{pat}.")  # validates now
        if not isinstance(self.skip, list) or not all(isinstance(s, str) for s in self.skip):
            raise ConfigError(f"skip: expected a list of name patterns, got {self.skip!r}")

    def to_toml(self) -> str:
        d = self.to_dict()
        for table in (d, *d.get("overrides", {}).values()):
            if "a_bits" in table and table["a_bits"] is None:
                table["a_bits"] = 0  # TOML has no null
        from cimkit.config import dumps_toml

        return dumps_toml(d)

    # ------------------------------------------------------------------ per-layer resolution

    def _layer_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(QuantConfig) if f.name in _LAYER_FIELDS}
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in d.items()}

    @staticmethod
    def _merged(base: dict[str, Any], ov: dict[str, Any], where: str = "") -> QuantConfig:
        d = dict(base)
        d.update(ov)
        if "w_bits" in ov and "w_mode" not in ov:
            d["w_mode"] = WMode.BINARY.value if ov["w_bits"] == 1 else WMode.AFFINE.value
        return QuantConfig.from_dict(d, where=where)

    @staticmethod
    def _matches(pattern: str, name: str, index: int | None, count: int | None) -> bool:
        ref = LayerRef(name, None, -1 if index is None else index, -1 if count is None else count)  # type: ignore[arg-type]
        if pattern in (FIRST, LAST) and (index is None or count is None):
            return False
        return matches(pattern, ref)

    def is_skipped(self, name: str, index: int | None = None, count: int | None = None) -> bool:
        """Whether layer ``name`` (at ``index`` of ``count`` quantizable layers) stays float."""
        return any(self._matches(p, name, index, count) for p in self.skip)

    def for_layer(self, name: str, index: int | None = None, count: int | None = None) -> QuantConfig | None:
        """The resolved config of layer ``name`` (overrides applied, none left), or None if skipped."""
        if self.is_skipped(name, index, count):
            return None
        d = self._layer_dict()
        for pat, ov in self.overrides.items():
            if self._matches(pat, name, index, count):
                d = self._merged(d, ov)._layer_dict()
        return QuantConfig.from_dict(d)

    def quant_fields(self) -> QuantConfig:
        """Just the :class:`QuantConfig` part of a subclass (e.g. a PTQ/QAT variant config)."""
        names = {f.name for f in dataclasses.fields(QuantConfig)}
        return QuantConfig.from_dict({k: v for k, v in self.to_dict().items() if k in names})

    def label(self) -> str:
        """Short label such as ``W4A4``, ``WbinA4``, ``WternA8``, ``Wb1.58A8``, ``W8Afp``,
        ``W4g32A8/token`` (with `` +overrides`` when some layers differ)."""
        w = {
            WMode.AFFINE: f"W{self.w_bits}",
            WMode.BINARY: "Wbin",
            WMode.TERNARY_TWN: "Wtern",
            WMode.TERNARY_ABSMEAN: "Wb1.58",
        }[self.w_mode]
        if self.group_size:
            w += f"g{self.group_size}"
        a = "Afp" if self.a_bits is None else f"A{self.a_bits}"
        if self.a_bits is not None and self.a_granularity is AGranularity.TOKEN:
            a += "/token"
        return f"{w}{a}" + (" +overrides" if self.overrides or self.skip else "")


# ----------------------------------------------------------------------------- presets

QUANT_PRESETS: Registry[QuantConfig] = Registry("quantization preset")
QUANT_PRESETS.add("w8a8", QuantConfig(), "8-bit per-channel symmetric weights, 8-bit activations (min/max)")
QUANT_PRESETS.add("w8", QuantConfig(a_bits=None), "8-bit weights only; activations stay float")
QUANT_PRESETS.add("w4", QuantConfig(w_bits=4, a_bits=None, w_observer=ObserverKind.MSE),
                  "4-bit weights only (MSE-optimal ranges); activations stay float")  # fmt: skip
QUANT_PRESETS.add("w4a8", QuantConfig(w_bits=4, w_observer=ObserverKind.MSE),
                  "4-bit weights (MSE ranges), 8-bit activations")  # fmt: skip
QUANT_PRESETS.add("w4a4_lsq", QuantConfig(w_bits=4, a_bits=4, lsq=True, observer=ObserverKind.MSE,
                  w_observer=ObserverKind.MSE), "4-bit weights and activations, learned step sizes (QAT)")  # fmt: skip
QUANT_PRESETS.add("w2a2_lsq", QuantConfig(w_bits=2, a_bits=2, lsq=True, observer=ObserverKind.MSE,
                  w_observer=ObserverKind.MSE, overrides={FIRST: {"w_bits": 8, "a_bits": 8},
                  LAST: {"w_bits": 8, "a_bits": 8}}), "2-bit weights/activations, first/last layer 8-bit, LSQ")  # fmt: skip
QUANT_PRESETS.add("ternary_a8", QuantConfig(w_mode=WMode.TERNARY_TWN, a_bits=8),
                  "TWN ternary weights (0.7·mean|w| threshold, per channel), 8-bit activations")  # fmt: skip
QUANT_PRESETS.add("bitnet_a8", QuantConfig(w_mode=WMode.TERNARY_ABSMEAN, per_channel=False, a_bits=8),
                  "BitNet b1.58 absmean ternary weights (per tensor), 8-bit activations")  # fmt: skip
QUANT_PRESETS.add("binary_a4", QuantConfig(w_mode=WMode.BINARY, a_bits=4, observer=ObserverKind.MSE),
                  "binary weights (sign·mean|w| per channel) with 4-bit activations, for 1-cell-per-weight CIM")  # fmt: skip
QUANT_PRESETS.add("binary_a8", QuantConfig(w_mode=WMode.BINARY, a_bits=8),
                  "binary weights (sign·mean|w| per channel) with 8-bit activations")  # fmt: skip
QUANT_PRESETS.add("w8a8_token", QuantConfig(a_symmetric=True, a_granularity=AGranularity.TOKEN),
                  "8-bit per-channel weights, 8-bit per-token dynamic (abs-max) activations")  # fmt: skip
QUANT_PRESETS.add("w4g32a8", QuantConfig(w_bits=4, group_size=32, w_observer=ObserverKind.MSE, a_symmetric=True,
                  a_granularity=AGranularity.TOKEN),
                  "4-bit weights in groups of 32 inputs per row (MSE ranges), 8-bit per-token activations")  # fmt: skip
QUANT_PRESETS.add("bitnet_b158", QuantConfig(w_mode=WMode.TERNARY_ABSMEAN, per_channel=False, a_bits=8,
                  a_symmetric=True, a_granularity=AGranularity.TOKEN),
                  "BitNet b1.58: absmean ternary weights (per tensor), per-token abs-max 8-bit activations")  # fmt: skip


def as_quant_config(config: QuantConfig | str | dict[str, Any]) -> QuantConfig:
    """A QuantConfig from a config, a preset name or a plain dict."""
    if isinstance(config, QuantConfig):
        return config
    if isinstance(config, str):
        return QUANT_PRESETS.get(config).replace()
    if isinstance(config, dict):
        return QuantConfig.from_dict(config)
    raise ConfigError(f"quantization config: expected a QuantConfig, preset name or dict, got {type(config).__name__}")
