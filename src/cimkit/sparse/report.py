"""What pruning bought: sparsity per layer, MACs and parameters, occupied crossbar arrays, required
ADC resolution and measured CPU latency; plus the report section.

Definitions (per layer, on ``tile_rows x tile_cols`` arrays placed as
:class:`cimkit.analog.tiling.TileGeometry` places them):

* ``arrays``: physical arrays of one weight copy (row tiles x column blocks); ``occupied_arrays``:
  those holding a non-zero weight (:func:`cimkit.sparse.patterns.occupancy`; the analog layers do
  not program the others).
* ``adc_bits`` (required ADC resolution for a lossless conversion): with integer weight codes
  ``c_ij`` (the quantized layer's own grid when it has one, else a symmetric per-output grid of
  ``w_bits``: ``c = round(w / s_j)``, ``s_j = max_i |w_ij| / (2^(w_bits-1) - 1)``) and unsigned input
  codes of ``x_bits`` per conversion (``x_bits = 1``: bit-serial inputs, one bit per cycle), the
  partial sum of column ``j`` of row tile ``t`` takes at most ``P_tj = (2^x_bits - 1) · Σ_i |c_ij|``
  + 1 distinct values, so ``adc_bits = ceil(log2(1 + max_tj P_tj))`` (0 for an all-zero layer).
  This is the "maximum column partial-sum range" measure of TinyADC (Yuan et al., DATE 2021): fewer
  non-zero weights per array column -> a smaller range -> fewer ADC bits for the same exact result.
* ``macs`` / ``params``: :func:`cimkit.quant.account` (dense MACs per sample of the Linear/Conv
  layers from their shapes; zeros inside a layer still count: only removal lowers them).

Energy and latency of the CIM hardware come from the cost model (``cimkit.cost``), which reads the
same per-layer records (the ``sparse`` entry of a pipeline's details; see :func:`model_record`).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.analog.tiling import TileGeometry
from cimkit.nn.adapters import standard_view
from cimkit.nn.walk import select
from cimkit.quant.accounting import account
from cimkit.report import Section, table_html
from cimkit.sparse.masks import bake_
from cimkit.sparse.patterns import occupancy

__all__ = ["forward_latency_ms", "layer_records", "model_record", "required_adc_bits", "sparse_sections"]


def _codes(mod: nn.Module, w: Tensor, w_bits: int) -> Tensor:
    """Integer weight codes ``|c|`` (float tensor of integers) of ``w``."""
    grid = getattr(mod, "weight_grid", None)
    if callable(grid):
        step, _ = grid()
        s = step.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype)
        return torch.round(w.abs() / s.clamp_min(1e-30))
    levels = 2 ** (w_bits - 1) - 1
    amax = w.abs().reshape(w.shape[0], -1).amax(1).reshape(-1, *([1] * (w.dim() - 1)))
    return torch.round(w.abs() / (amax / levels).clamp_min(1e-30))


@torch.no_grad()
def required_adc_bits(mod: nn.Module, w: Tensor, tile_rows: int, tile_cols: int, w_bits: int = 8,
                      x_bits: int = 1, name: str = "layer") -> int:  # fmt: skip
    """Required ADC bits of one layer with weight ``w`` (see the module docstring)."""
    g = TileGeometry.of(tuple(w.shape), tile_rows, tile_cols, name)
    c = g.to_tiles(_codes(mod, w.detach().double(), w_bits))  # (T, R, N)
    p = float(c.sum(1).amax()) * (2**x_bits - 1)
    return math.ceil(math.log2(1.0 + p)) if p > 0 else 0


def _weight(mod: nn.Module) -> Tensor:
    fn = getattr(mod, "transformed_weight", None)
    return (fn() if callable(fn) else mod.weight).detach()


@torch.no_grad()
def layer_records(model: nn.Module, tile_rows: int = 128, tile_cols: int = 128, w_bits: int = 8,
                  x_bits: int = 1) -> list[dict[str, Any]]:  # fmt: skip
    """One record per Linear/Conv layer: ``name, shape, weights, nonzero, sparsity, arrays,
    occupied_arrays, adc_bits``. Layers with a registered adapter (GPT-2's ``Conv1D``) are read as
    the standard layer they compute (:func:`cimkit.nn.adapters.standard_view`)."""
    out = []
    for r in select(standard_view(model)):
        w = _weight(r.module)
        g = TileGeometry.of(tuple(w.shape), tile_rows, tile_cols, r.name)
        occ = occupancy(w, tile_rows, tile_cols, r.name)
        nz = int(w.count_nonzero())
        out.append({
            "name": r.name, "shape": list(w.shape), "weights": int(w.numel()), "nonzero": nz,
            "sparsity": 1.0 - nz / max(w.numel(), 1), "arrays": int(g.arrays), "occupied_arrays": int(occ.sum()),
            "adc_bits": required_adc_bits(r.module, w, tile_rows, tile_cols, w_bits, x_bits, r.name),
        })  # fmt: skip
    return out


@torch.no_grad()
def model_record(model: nn.Module, example_input: Tensor, tile_rows: int = 128, tile_cols: int = 128,
                 w_bits: int = 8, x_bits: int = 1) -> dict[str, Any]:  # fmt: skip
    """``{"layers": layer_records(...), "total": {...}}`` with totals ``params, macs, weights,
    nonzero, sparsity, arrays, occupied_arrays, adc_bits`` (the largest of the layers) and the
    geometry used (``tile_rows``, ``tile_cols``, ``w_bits``, ``x_bits``). This is the record the
    cost model reads."""
    layers = layer_records(model, tile_rows, tile_cols, w_bits, x_bits)
    acc = account(model, example_input).total
    weights = sum(r["weights"] for r in layers)
    nz = sum(r["nonzero"] for r in layers)
    total = {
        "params": int(acc["params"]), "macs": int(acc["macs"]), "weights": weights, "nonzero": nz,
        "sparsity": 1.0 - nz / max(weights, 1), "arrays": sum(r["arrays"] for r in layers),
        "occupied_arrays": sum(r["occupied_arrays"] for r in layers),
        "adc_bits": max((r["adc_bits"] for r in layers), default=0),
    }  # fmt: skip
    return {"layers": layers, "total": total,
            "geometry": {"tile_rows": tile_rows, "tile_cols": tile_cols, "w_bits": w_bits, "x_bits": x_bits}}  # fmt: skip


@torch.no_grad()
def forward_latency_ms(models: dict[str, nn.Module], x: Tensor, rounds: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median wall time (ms) of one eval-mode forward of ``x`` per model; the models take turns
    round by round, so a change of machine load affects them alike. Masks are baked into copies
    first, so a masked model is timed as the dense model it computes."""
    work = {k: bake_(copy.deepcopy(m)).eval() for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in work}
    for i in range(rounds + warmup):
        for k, m in work.items():
            t0 = time.perf_counter()
            m(x)
            if i >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def sparse_sections(records: list[dict[str, Any]]) -> list[Section]:
    """Report section: for every result with a ``sparse`` record, the totals before and after."""
    rows = []
    for r in records:
        sp = r.get("details", {}).get("sparse")
        if not sp or "before" not in sp or "after" not in sp:
            continue
        b, a = sp["before"]["total"], sp["after"]["total"]
        lat = sp.get("latency_ms", {})
        geo = sp["after"].get("geometry", {})
        rows.append([
            r["name"], f"{b['params']} → {a['params']}", f"{b['macs']} → {a['macs']}",
            f"{a['macs'] / max(b['macs'], 1):.3f}", f"{100 * a['sparsity']:.1f}",
            f"{b['occupied_arrays']} → {a['occupied_arrays']} ({geo.get('tile_rows')}x{geo.get('tile_cols')})",
            f"{b['adc_bits']} → {a['adc_bits']}",
            f"{lat.get('before', float('nan')):.3g} → {lat.get('after', float('nan')):.3g}" if lat else "",
        ])  # fmt: skip
    if not rows:
        return []
    headers = ["variant", "params", "MACs / sample", "MAC ratio", "weight sparsity (%)", "occupied arrays",
               "required ADC bits", "CPU forward (ms)"]  # fmt: skip
    return [Section("Sparsity: model size, crossbar arrays and ADC resolution before and after pruning",
                    table_html(headers, rows))]  # fmt: skip
