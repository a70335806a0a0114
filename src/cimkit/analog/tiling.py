"""Tile geometry: how a layer's weight matrix is cut into crossbar tiles.

A weight of shape ``(N, C, *k)`` (``N`` outputs, ``C`` input channels, kernel ``k``; a Linear is
``(N, C)`` with ``k = ()``) is viewed as ``N`` columns of ``C · K`` rows (``K = prod(k)``, the
rows of one input channel). Rows are split into ``T`` row tiles of at most ``tile_rows`` rows at
input-channel boundaries: a tile holds ``ch_per_tile = ceil(C / T)`` whole channels
(``T = ceil(C / floor(tile_rows / K))``), so a tile is one group of a grouped convolution; the last
tile is zero-padded to ``ch_per_tile`` channels. Columns are split in blocks of ``tile_cols``
outputs (they matter for per-tile weight scaling, the word-line IR drop and the number of physical
arrays). This is the geometry the simulator computes with and the cost model prices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cimkit.errors import ConfigError

__all__ = ["TileGeometry"]


@dataclass(frozen=True)
class TileGeometry:
    """Row/column tiling of one layer (see the module docstring); all counts are integers."""

    n_out: int  # N: outputs (crossbar columns in use)
    n_in: int  # C: input channels (in_features for a Linear)
    ksz: int  # K: kernel elements per input channel (1 for a Linear)
    n_tiles: int  # T: row tiles
    ch_per_tile: int  # input channels per row tile
    rows: int  # R = ch_per_tile * K: rows per row tile (padded)
    tile_rows: int  # the mapping's array height
    tile_cols: int  # the mapping's array width

    @classmethod
    def of(cls, weight_shape: tuple[int, ...] | torch.Size, tile_rows: int, tile_cols: int,
           name: str = "layer") -> TileGeometry:  # fmt: skip
        """The geometry of a weight of ``weight_shape`` on ``tile_rows x tile_cols`` arrays."""
        shape = tuple(int(s) for s in weight_shape)
        if len(shape) < 2:
            raise ConfigError(f"{name}: weight shape {shape} is not a Linear/Conv weight")
        n_out, n_in = shape[0], shape[1]
        ksz = int(math.prod(shape[2:])) if len(shape) > 2 else 1
        if n_out == 0 or n_in == 0 or ksz == 0:
            raise ConfigError(f"{name}: weight shape {shape} is empty; a layer with no inputs or outputs "
                              f"has nothing to map onto crossbars")  # fmt: skip
        max_c = tile_rows // ksz
        if max_c == 0:
            raise ConfigError(
                f"tile_rows: {tile_rows} is smaller than one input channel's kernel of {name} "
                f"({ksz} rows); allowed: >= {ksz}"
            )
        n_tiles = -(-n_in // max_c)
        ch = -(-n_in // n_tiles)
        return cls(n_out, n_in, ksz, n_tiles, ch, ch * ksz, int(tile_rows), int(tile_cols))

    # ------------------------------------------------------------------ counts

    @property
    def n_in_pad(self) -> int:
        """Input channels after padding the last tile."""
        return self.n_tiles * self.ch_per_tile

    @property
    def col_blocks(self) -> int:
        """Column blocks of ``tile_cols`` outputs: ``ceil(N / tile_cols)``."""
        return -(-self.n_out // self.tile_cols)

    @property
    def arrays(self) -> int:
        """Physical ``tile_rows x tile_cols`` arrays per weight copy: row tiles x column blocks."""
        return self.n_tiles * self.col_blocks

    def rows_used(self) -> list[int]:
        """Rows holding real weights in each row tile (the last one may hold fewer channels)."""
        out = []
        for t in range(self.n_tiles):
            ch = min(self.ch_per_tile, self.n_in - t * self.ch_per_tile)
            out.append(max(ch, 0) * self.ksz)
        return out

    # ------------------------------------------------------------------ tensors

    def to_tiles(self, w: Tensor) -> Tensor:
        """Weight (original shape) -> ``(T, R, N)`` tiles (input channels zero-padded)."""
        w3 = w.reshape(self.n_out, self.n_in, self.ksz)
        if self.n_in_pad > self.n_in:
            w3 = F.pad(w3, (0, 0, 0, self.n_in_pad - self.n_in))
        return w3.reshape(self.n_out, self.n_tiles, self.rows).permute(1, 2, 0)

    def from_tiles(self, wt: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
        """``(T, R, N)`` tiles -> weight of ``shape`` (padding dropped)."""
        w3 = wt.permute(2, 0, 1).reshape(self.n_out, self.n_in_pad, self.ksz)[:, : self.n_in]
        return w3.reshape(shape)

    def row_mask(self, device: torch.device | str = "cpu") -> Tensor:
        """``(T, R, 1)``: 1 on rows that hold weights, 0 on padding rows."""
        ones = torch.ones(self.n_out, self.n_in, self.ksz, device=device)
        return self.to_tiles(ones)[:, :, :1]

    def column_blocks(self, x: Tensor) -> Tensor:
        """``(..., N)`` -> ``(..., n_blk, tile_cols)`` (zero-padded to whole blocks)."""
        pad = self.col_blocks * self.tile_cols - self.n_out
        xp = F.pad(x, (0, pad)) if pad else x
        return xp.view(*xp.shape[:-1], self.col_blocks, self.tile_cols)
