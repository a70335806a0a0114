"""What to prune and how: :class:`SparsityConfig` (the ``sparsify`` transform's config).

Patterns (:class:`Pattern`), per layer unless marked *coupled*:

* ``unstructured``: single weights.
* ``nm``: N:M — in every run of ``m`` consecutive weights along the reduction axis of the unrolled
  weight matrix (input channel x kernel position, per output), at most ``n`` are non-zero
  (2:4 is NVIDIA's sparse tensor-core format, Mishra et al. 2021).
* ``filter``: output channels (rows of the GEMM, columns of a crossbar). *Coupled* by default: a
  filter is pruned together with its bias, its BatchNorm channel, the next layers' input columns
  and every layer tied to it by a residual add or a concatenation (the channel groups of
  :mod:`cimkit.sparse.deps`), so it can be physically removed (:mod:`cimkit.sparse.removal`).
  ``coupled = false`` masks only the layer's weight rows and bias.
* ``channel``: input channels; coupled, the same groups scored from their consumers' columns.
* ``shape``: filter shapes, the columns of the unrolled weight matrix (one (c, kh, kw) position
  across all filters; Wen et al. 2016).
* ``block``: crossbar-shaped blocks: one physical array of the analog mapping, a row tile (whole
  input channels, ``tile_rows`` rows at most) x a column block (``tile_cols`` outputs), exactly the
  cells :class:`cimkit.analog.tiling.TileGeometry` places on one array.
* ``tile_column``: TinyADC-style (Yuan et al., DATE 2021): in every column of every row tile (the
  cells one ADC conversion sums) keep the ``ceil((1 - sparsity) · rows)`` largest weights, which
  bounds the column's partial-sum range and so the required ADC resolution
  (:func:`cimkit.sparse.report.required_adc_bits`).
* ``head``: attention heads (coupled: the head's q/k/v rows and output-projection columns).
* ``depth``: whole residual branches (coupled: every layer of ``x + f(x)``'s ``f``; Wen et al.
  2016's depth-wise sparsity).

``sparsity`` is the fraction of the pattern's groups pruned (of each layer or coupled dimension
with ``scope = "layer"``; of all of them, ranked by score over the layer's mean score, with
``scope = "global"``); ``n``/``m`` set N:M. ``criterion``: group magnitude ``l1`` (Σ|w|) or ``l2``
(sqrt Σ w²). ``keep_min`` groups are always kept per layer / dimension. ``overrides``: per-layer
rules (exact name, glob, ``@first``, ``@last`` -> fields) through :class:`cimkit.nn.Rules`; a
coupled dimension takes the rules of its first producing layer. ``skip``: layers left dense (a
coupled dimension is pruned only when none of its producing layers is skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.nn.walk import Rules

__all__ = ["COUPLED_ONLY", "LAYER_FIELDS", "PER_LAYER", "Criterion", "Pattern", "Scope", "SparsityConfig"]


class Pattern(str, Enum):
    """Which weights form one prunable group (see the module docstring)."""

    UNSTRUCTURED = "unstructured"
    NM = "nm"
    FILTER = "filter"
    CHANNEL = "channel"
    SHAPE = "shape"
    BLOCK = "block"
    TILE_COLUMN = "tile_column"
    HEAD = "head"
    DEPTH = "depth"


class Criterion(str, Enum):
    """Group importance: ``l1`` = Σ|w|, ``l2`` = sqrt(Σ w²) over the group's weights."""

    L1 = "l1"
    L2 = "l2"


class Scope(str, Enum):
    """``layer``: each layer / dimension prunes its own fraction; ``global``: one ranking for all."""

    LAYER = "layer"
    GLOBAL = "global"


PER_LAYER = (Pattern.UNSTRUCTURED, Pattern.NM, Pattern.SHAPE, Pattern.BLOCK, Pattern.TILE_COLUMN)
COUPLED_ONLY = (Pattern.HEAD, Pattern.DEPTH)
# fields a per-layer rule may set
LAYER_FIELDS = ("sparsity", "pattern", "n", "m", "criterion", "tile_rows", "tile_cols")


@dataclass
class SparsityConfig(Config):
    """What to prune (see the module docstring for every field)."""

    pattern: Pattern = Pattern.UNSTRUCTURED
    sparsity: float = 0.5
    n: int = 2
    m: int = 4
    criterion: Criterion = Criterion.L2
    scope: Scope = Scope.LAYER
    coupled: bool = True
    tile_rows: int = 128
    tile_cols: int = 128
    keep_min: int = 1
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pattern = as_enum("pattern", self.pattern, Pattern)
        self.criterion = as_enum("criterion", self.criterion, Criterion)
        self.scope = as_enum("scope", self.scope, Scope)
        check_range("sparsity", self.sparsity, 0.0, 1.0, hi_open=True)
        check_range("m", self.m, 1, 1 << 16)
        check_range("n", self.n, 1, self.m)
        check_range("tile_rows", self.tile_rows, 1, 1 << 16)
        check_range("tile_cols", self.tile_cols, 1, 1 << 16)
        check_range("keep_min", self.keep_min, 1)
        if not isinstance(self.skip, list) or not all(isinstance(s, str) for s in self.skip):
            raise ConfigError(f"skip: expected a list of name patterns, got {self.skip!r}")
        rules = self.rules()
        for pat, fields in rules.table.items():
            if "pattern" in fields:
                p = as_enum(f"overrides.{pat}.pattern", fields["pattern"], Pattern)
                if self.is_coupled() or self.pattern_is_coupled(p):
                    raise ConfigError(
                        f"overrides.{pat}.pattern: {p.value!r} is not allowed here; a per-layer rule may change "
                        f"the pattern only between per-layer patterns "
                        f"({', '.join(x.value for x in PER_LAYER)}, filter/channel with coupled = false)"
                    )
            try:
                self.replace(**{**fields, "overrides": {}})
            except ConfigError as e:
                raise ConfigError(f"overrides.{pat}.{e}") from None

    def rules(self) -> Rules:
        """The per-layer rule table (:class:`cimkit.nn.Rules`)."""
        return Rules(self.overrides, allowed=LAYER_FIELDS, where="overrides")

    def pattern_is_coupled(self, p: Pattern | None = None) -> bool:
        p = self.pattern if p is None else p
        return p in COUPLED_ONLY or (p in (Pattern.FILTER, Pattern.CHANNEL) and self.coupled)

    def is_coupled(self) -> bool:
        """Whether this config prunes coupled groups (needs the dependency analysis)."""
        return self.pattern_is_coupled()

    def label(self) -> str:
        """A short label such as ``filter 50%``, ``2:4``, ``block 128x128 75%``."""
        p = self.pattern
        if p == Pattern.NM:
            return f"{self.n}:{self.m}"
        s = f"{100 * self.sparsity:g}%"
        if p in (Pattern.BLOCK, Pattern.TILE_COLUMN):
            return f"{p.value} {self.tile_rows}x{self.tile_cols} {s}"
        return f"{p.value} {s}" + (" (per layer)" if p in (Pattern.FILTER, Pattern.CHANNEL) and not self.coupled else "")
