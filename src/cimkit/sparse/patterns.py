"""Per-layer sparsity patterns: a weight's groups as rows of a matrix, and masks from kept groups.

A weight of shape ``(N, C, *k)`` (``K = prod(k)``; a Linear is ``(N, C)``) is viewed as the
unrolled matrix ``W`` of ``N`` rows (outputs, the columns of a crossbar) by ``C·K`` columns (the
reduction axis, the rows of a crossbar). :func:`group_view` returns the groups of a pattern as
the rows of a ``(G, S)`` matrix (``S`` elements per group; blocks of a partial tile are zero-padded),
which is what the criteria score and the regularizers penalise; :func:`mask_from_keep` turns a
``(G,)`` keep vector back into a mask of the weight's shape. ``nm`` and ``tile_column`` keep the
largest weights *within* each group instead (:func:`nm_mask`, :func:`tile_column_mask`).

Crossbar geometry is :class:`cimkit.analog.tiling.TileGeometry`: row tiles hold whole input
channels, so a ``block`` group is exactly the cells of one physical array (row tile x column
block), and :func:`occupancy` is the array occupancy the analog layers use to skip empty arrays.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cimkit.analog.tiling import TileGeometry
from cimkit.errors import ConfigError
from cimkit.sparse.config import Criterion, Pattern

__all__ = ["group_scores", "group_view", "mask_from_keep", "nm_mask", "occupancy", "tile_column_mask"]


def _geom(shape: torch.Size | tuple[int, ...], tile_rows: int, tile_cols: int, name: str) -> TileGeometry:
    return TileGeometry.of(tuple(shape), tile_rows, tile_cols, name)


def _block_tiles(w: Tensor, g: TileGeometry) -> Tensor:
    """``(T, R, n_blk, cols)``: the weight's tiles split into column blocks (zero-padded)."""
    return g.column_blocks(g.to_tiles(w))  # (T, R, n_blk, cols)


def group_view(w: Tensor, pattern: Pattern, tile_rows: int = 128, tile_cols: int = 128, name: str = "layer") -> Tensor:
    """The groups of ``pattern`` in ``w`` as the rows of a ``(G, S)`` matrix (differentiable).

    ``unstructured``: ``(N·C·K, 1)``; ``filter``: ``(N, C·K)``; ``channel``: ``(C, N·K)``;
    ``shape``: ``(C·K, N)``; ``block``: ``(T·n_blk, R·cols)``, row-major over (row tile, column
    block) with ``R`` rows per tile and ``cols = tile_cols``."""
    n = w.shape[0]
    if pattern == Pattern.UNSTRUCTURED:
        return w.reshape(-1, 1)
    if pattern == Pattern.FILTER:
        return w.reshape(n, -1)  # (N, C*K)
    if pattern == Pattern.CHANNEL:
        return w.transpose(0, 1).reshape(w.shape[1], -1)  # (C, N*K)
    if pattern == Pattern.SHAPE:
        return w.reshape(n, -1).t()  # (C*K, N)
    if pattern == Pattern.BLOCK:
        g = _geom(w.shape, tile_rows, tile_cols, name)
        b = _block_tiles(w, g)  # (T, R, n_blk, cols)
        return b.permute(0, 2, 1, 3).reshape(g.n_tiles * g.col_blocks, -1)  # (T*n_blk, R*cols)
    raise ConfigError(f"pattern: {pattern.value!r} has no per-layer groups; allowed here: unstructured, filter, "
                      f"channel, shape, block")  # fmt: skip


def mask_from_keep(keep: Tensor, pattern: Pattern, shape: torch.Size | tuple[int, ...], tile_rows: int = 128,
                   tile_cols: int = 128, name: str = "layer") -> Tensor:  # fmt: skip
    """A 0/1 mask of ``shape`` that keeps the groups where ``keep`` (G,) is true (see :func:`group_view`)."""
    shape = tuple(shape)
    k = keep.to(torch.float32)
    n, c = shape[0], shape[1]
    ksz = math.prod(shape[2:]) if len(shape) > 2 else 1
    if pattern == Pattern.UNSTRUCTURED:
        return k.reshape(shape)
    if pattern == Pattern.FILTER:
        return k.view(n, 1).expand(n, c * ksz).reshape(shape)
    if pattern == Pattern.CHANNEL:
        return k.view(1, c, 1).expand(n, c, ksz).reshape(shape)
    if pattern == Pattern.SHAPE:
        return k.view(1, c * ksz).expand(n, c * ksz).reshape(shape)
    if pattern == Pattern.BLOCK:
        g = _geom(shape, tile_rows, tile_cols, name)
        kb = k.view(g.n_tiles, 1, g.col_blocks, 1).expand(g.n_tiles, g.rows, g.col_blocks, g.tile_cols)
        kt = kb.reshape(g.n_tiles, g.rows, -1)[:, :, : g.n_out]  # (T, R, N)
        return g.from_tiles(kt, shape)
    raise ConfigError(f"pattern: {pattern.value!r} has no per-layer groups")


def group_scores(groups: Tensor, criterion: Criterion) -> Tensor:
    """``(G,)`` magnitude of each row of ``groups``: ``l1`` Σ|w| or ``l2`` sqrt(Σ w²)."""
    g = groups.detach()
    if criterion == Criterion.L1:
        return g.abs().sum(1)
    return g.pow(2).sum(1).sqrt()


def nm_mask(w: Tensor, n: int, m: int) -> Tensor:
    """N:M mask: in every run of ``m`` consecutive weights along each output's reduction axis
    (``C·K``, zero-padded to a multiple of ``m``) the ``n`` of largest magnitude are kept."""
    rows = w.shape[0]
    flat = w.detach().reshape(rows, -1).abs()  # (N, C*K)
    ck = flat.shape[1]
    pad = (-ck) % m
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad), value=-1.0)  # padding is never chosen
    runs = flat.view(rows, -1, m)  # (N, runs, m)
    idx = runs.topk(min(n, m), dim=-1).indices  # (N, runs, n)
    keep = torch.zeros_like(runs).scatter_(-1, idx, 1.0)
    return keep.reshape(rows, -1)[:, :ck].reshape(w.shape).to(w.dtype)


def tile_column_mask(w: Tensor, sparsity: float, tile_rows: int = 128, tile_cols: int = 128,
                     name: str = "layer") -> Tensor:  # fmt: skip
    """TinyADC-style mask: in every column of every row tile keep the ``ceil((1 - sparsity) · r)``
    largest-magnitude weights (``r`` = rows that tile holds)."""
    g = _geom(w.shape, tile_rows, tile_cols, name)
    wt = g.to_tiles(w.detach()).abs()  # (T, R, N)
    used = torch.tensor(g.rows_used(), device=w.device)  # (T,)
    keep_n = torch.clamp(torch.ceil((1.0 - sparsity) * used.double()).long(), min=1)  # (T,)
    rank = wt.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (T, R, N): 0 = largest
    keep = (rank < keep_n.view(-1, 1, 1)).to(w.dtype)
    return g.from_tiles(keep, w.shape)


def occupancy(w: Tensor, tile_rows: int, tile_cols: int, name: str = "layer") -> Tensor:
    """``(T, n_blk)`` bool: which physical arrays (row tile x column block) hold a non-zero weight
    (the rule :meth:`cimkit.analog.AnalogLayer.tile_occupancy` programs by)."""
    g = _geom(w.shape, tile_rows, tile_cols, name)
    nz = g.to_tiles(w.detach()).ne(0).any(dim=1)  # (T, N)
    return g.column_blocks(nz.to(torch.uint8)).amax(-1).bool()  # (T, n_blk)
