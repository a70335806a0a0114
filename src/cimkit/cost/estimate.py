"""Price hardware-independent layer records on a :class:`~cimkit.cost.HardwareSpec`.

``describe(model, example)`` makes the records (one capture pass, the handlers); ``price(described,
spec)`` turns them into energy per inference by component, latency and area; ``estimate`` does both.
Pricing copies the records, so one description can be priced on many specs (and, by mixed
precision, at many bit widths) without another pass.

Where a layer runs (``map_layers``): on a CIM spec, analog layers run on their own crossbars;
plain Linear/Conv layers are mapped onto the spec's crossbars (``"all"``), or stay on the chip's
digital units (``"analog"``); ``"auto"`` maps them when the model has no analog layer and keeps them
digital when it has (the layers an analog conversion kept digital stay digital). On a digital spec
every layer runs on the PE array. Elementwise work and activation x activation products (attention)
are digital everywhere.

Crossbar layer, per inference (``P`` input cycles, ``pos`` output positions, row tiles ``t`` with
``r_t`` used rows split into ``g_t = ceil(r_t / parallel_rows)`` reads, column blocks ``b`` with
``c_b`` used columns, ``S`` slices, ``D`` devices, occupied arrays only):

* ADC conversions ``P · pos · S · Σ_tb g_t c_b`` (a differential pair is one conversion), each
  followed by one shift-and-add; cell reads ``P · pos · S · D · Σ_tb r_t c_b``; word-line drives
  ``P · pos · S · D · Σ_tb r_t``; partial-sum adds ``pos · Σ_b c_b (Σ_t g_t − 1)``;
* buffer traffic ``pos · (Σ_t r_t + N) · a`` bits (each position's input vector, its outputs), the
  same input bits plus every partial sum over the interconnect, whose length is the mean distance
  from the centre of a square chip to a tile, ``sqrt(area) / 2`` (:func:`wire_mm`);
* cells conduct, and a row is driven, while a column is sampled (``t_sense_ns`` per sample; a row
  for all its array's columns in turn); the conversion itself takes the ADC model's time;
* latency ``pos · P · max_tb g_t · t_read(c_b)`` (all arrays in parallel, each read converting its
  columns through its ``tile_cols / cols_per_adc`` ADCs in turn; no weight duplication, no
  pipelining across layers);
* area: cells, one ADC and shift-adder per ``cols_per_adc`` columns of each weight tile, one
  driver per row of each array.

Digital layer (PE array ``R x C``): MACs at ``mult(w, a) + add``, weight-stationary buffer traffic
``weights·w + pos·K·a·ceil(N/C) + pos·N·acc·(2 ceil(K/R) − 1)`` bits (weights once, inputs once per
column fold, partial sums written per row fold and read back), the same bits over the interconnect,
:func:`~cimkit.cost.formulas.systolic_cycles` at ``clock_ghz``; weights come from DRAM every
inference when the model's weights exceed ``buffer_kib``. The ``(chip)`` row holds the global
buffer, the digital units and the model input/output DRAM traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cimkit.analog.tiling import TileGeometry
from cimkit.cost.capture import Capture, capture
from cimkit.cost.formulas import (
    accumulator_bits,
    adc_energy_pj,
    cell_energy_pj,
    dac_energy_pj,
    interconnect_energy_pj,
    read_time_ns,
    systolic_cycles,
)
from cimkit.cost.handlers import run_handlers
from cimkit.cost.layers import leaf_record
from cimkit.cost.record import (
    AREA_COMPONENTS,
    ENERGY_COMPONENTS,
    ENERGY_FIELDS,
    CrossbarMap,
    LayerCost,
    area_field,
    energy_field,
)
from cimkit.cost.specs import HardwareSpec, get_spec
from cimkit.cost.storage import values_bytes
from cimkit.cost.table import CostTable
from cimkit.errors import ConfigError

__all__ = ["MAP_MODES", "Described", "describe", "estimate", "price", "price_layer", "wire_mm"]

FLOAT_BITS = 32
MAP_MODES = ("auto", "all", "analog")


@dataclass
class Described:
    """Hardware-independent records of one model (from :func:`describe`) and what the pass saw."""

    records: list[LayerCost]
    capture: Capture

    @property
    def has_crossbar_layers(self) -> bool:
        return any(r.crossbar is not None for r in self.records)


def describe(model: nn.Module, example_input: Any) -> Described:
    """One capture pass and every handler: the model's records (workload, storage, crossbar maps)."""
    cap = capture(model, example_input)
    records = []
    for c in cap.layers:
        if c.site is not None:
            rec = c.site.fn(c.module, c)
        elif c.chain:
            rec = run_handlers(c.module, c, c.chain)
        else:
            rec = leaf_record(c.module, c)
        rec.name = rec.name or c.name or type(c.module).__name__
        records.append(rec)
    if cap.other_params or cap.other_buffers:
        records.append(LayerCost(name="(other)", type="parameters", op="none", hardware="none", params=cap.other_params,
                                 size_bytes=values_bytes(cap.other_params + cap.other_buffers)))  # fmt: skip
    return Described(records, cap)


def estimate(model: nn.Module, example_input: Any, spec: str | HardwareSpec | dict | None = "rram_22nm", *,
             adc: str | None = None, map_layers: str = "auto", spec_name: str | None = None) -> CostTable:  # fmt: skip
    """Cost of ``model`` per inference on ``spec`` (a preset name, a spec or a table of fields);
    ``adc`` swaps the ADC model. Returns a :class:`~cimkit.cost.CostTable` (``.to_dict()``,
    ``.to_pandas()``, ``.format()``)."""
    name = spec_name or (spec if isinstance(spec, str) else "custom")
    hw = get_spec(spec, adc=adc)
    return price(describe(model, example_input), hw, map_layers=map_layers, spec_name=name)


# ----------------------------------------------------------------------------- pricing


def _eff_bits(bits: int, spec: HardwareSpec, default: int) -> int:
    """Bits a layer computes with on ``spec``: float (32) becomes the CIM spec's width."""
    if bits <= 0:
        return default
    return default if (spec.is_cim and bits >= FLOAT_BITS) else bits


def spec_crossbar(rec: LayerCost, spec: HardwareSpec, w_bits: int, a_bits: int) -> CrossbarMap:
    """The crossbar map of a plain layer on ``spec``: the tile geometry the simulator would use
    (:class:`cimkit.analog.TileGeometry` on ``tile_rows x tile_cols``), the spec's slicing and inputs."""
    geom = TileGeometry.of(rec.weight_shape, spec.tile_rows, spec.tile_cols, rec.name)
    mask = rec.extra.get("mask")
    occ = None
    if mask is not None:  # a sparsity mask: arrays (row tile x column block) with no kept weight stay empty
        nz = geom.to_tiles(mask.detach().float()).ne(0).any(dim=1)  # (T, N)
        occ = geom.column_blocks(nz.to(torch.uint8)).amax(-1).bool().cpu().numpy()  # (T, n_blk)
    return CrossbarMap(geom, spec.slices_for(w_bits), spec.devices, spec.planes_for(a_bits),
                       1 if spec.bit_serial else spec.dac_bits, spec.adc_bits, spec.bit_serial, occ,
                       source="spec")  # fmt: skip


@dataclass
class _MapSums:
    """Sums over the occupied arrays of a crossbar map (one slice and device; per position and cycle)."""

    conv: float  # Σ_tb g_t c_b: conversions
    cells: float  # Σ_tb r_t c_b: cell reads
    rows: float  # Σ_tb r_t: word-line drives
    arrays: int  # occupied (row tile, column block) pairs
    accum_cols: float  # Σ_b c_b (Σ_t g_t − 1): partial-sum adds
    partial_cols: float  # Σ_b c_b Σ_t g_t: partial sums sent to accumulators
    t_read_ns: float  # the slowest array's reads per position and cycle: max_tb g_t t_read(c_b)
    drive_ns: float  # mean time a driven row is held (rows-weighted over arrays)


def _map_sums(m: CrossbarMap, spec: HardwareSpec, adc_ns: float) -> _MapSums:
    """The sums of :class:`_MapSums`: closed forms for a fully occupied map, NumPy over the
    ``(row tile, column block)`` grid when some arrays are empty."""
    g = m.geometry
    pr = spec.parallel_rows if 0 < spec.parallel_rows < g.tile_rows else g.tile_rows
    n_adc = -(-g.tile_cols // spec.cols_per_adc)
    if m.occupancy is None:
        t, nb = g.n_tiles, g.col_blocks
        r_last = (g.n_in - (t - 1) * g.ch_per_tile) * g.ksz
        rows = (t - 1) * g.rows + r_last
        g_full, g_last = -(-g.rows // pr), -(-r_last // pr)
        g_sum = (t - 1) * g_full + g_last
        g_max = max(g_full if t > 1 else 0, g_last)
        c_last = g.n_out - (nb - 1) * g.tile_cols
        s_full, s_last = -(-g.tile_cols // n_adc), -(-c_last // n_adc)
        s_max = max(s_full if nb > 1 else 0, s_last)
        drive = ((nb - 1) * (spec.t_settle_ns + s_full * spec.t_sense_ns) + spec.t_settle_ns + s_last * spec.t_sense_ns) / nb
        return _MapSums(conv=float(g_sum * g.n_out), cells=float(rows * g.n_out), rows=float(rows * nb), arrays=t * nb,
                        accum_cols=float(g.n_out * (g_sum - 1)), partial_cols=float(g.n_out * g_sum),
                        t_read_ns=g_max * read_time_ns(spec, s_max, adc_ns), drive_ns=drive)  # fmt: skip
    occ = np.asarray(m.occupancy, bool)
    if occ.shape != (g.n_tiles, g.col_blocks):
        raise ConfigError(f"occupancy of shape {occ.shape} does not match {g.n_tiles} row tiles x {g.col_blocks} blocks")
    occ_f = occ.astype(np.float64)  # (T, NB)
    rows_t = np.clip(g.n_in - np.arange(g.n_tiles) * g.ch_per_tile, 0, g.ch_per_tile) * g.ksz  # (T,)
    cols_b = np.minimum(g.tile_cols, g.n_out - np.arange(g.col_blocks) * g.tile_cols)  # (NB,)
    groups_t = -(-rows_t // pr)  # (T,) reads per row tile
    seq_b = -(-cols_b // n_adc)  # (NB,) conversions per ADC and read (sequential_conversions)
    partials_b = (occ_f * groups_t[:, None]).sum(0)  # (NB,)
    rows_tb = occ_f * rows_t[:, None]  # (T, NB)
    drive_b = spec.t_settle_ns + seq_b * spec.t_sense_ns  # (NB,)
    n_rows = float(rows_tb.sum())
    return _MapSums(
        conv=float((occ_f * groups_t[:, None] * cols_b[None, :]).sum()), cells=float((rows_tb * cols_b[None, :]).sum()),
        rows=n_rows, arrays=int(occ.sum()), accum_cols=float((cols_b * np.maximum(partials_b - 1, 0)).sum()),
        partial_cols=float((cols_b * partials_b).sum()),
        t_read_ns=float((occ_f * groups_t[:, None] * read_time_ns(spec, seq_b, adc_ns)[None, :]).max(initial=0.0)),
        drive_ns=float((rows_tb * drive_b[None, :]).sum() / n_rows) if n_rows else 0.0,
    )  # fmt: skip


def _price_crossbar(rec: LayerCost, m: CrossbarMap, spec: HardwareSpec, w: int, a: int) -> None:
    g = m.geometry
    S, D, P, pos = m.slices, m.devices, m.planes, rec.positions
    adc_bits = m.adc_bits or spec.adc_bits
    adc = spec.adc_model
    adc_ns = adc.latency_ns(adc_bits)
    k = _map_sums(m, spec, adc_ns)
    tiles = k.arrays * S
    acc = accumulator_bits(w, a, rec.fan_in)
    rec.hardware = "cim"
    rec.row_tiles, rec.col_blocks, rec.slices, rec.devices, rec.planes = g.n_tiles, g.col_blocks, S, D, P
    rec.tiles, rec.arrays = tiles, tiles * D
    rec.rows_used, rec.cols_used = g.n_in * g.ksz, g.n_out
    rec.utilisation = k.cells / (k.arrays * g.tile_rows * g.tile_cols) if k.arrays else 0.0
    rec.dac_bits, rec.adc_bits = m.dac_bits, adc_bits
    rec.adc_conversions = int(P * pos * S * k.conv)
    rec.cell_reads = int(P * pos * S * D * k.cells)
    rec.dac_conversions = int(P * pos * S * D * k.rows)
    rec.shift_adds = rec.adc_conversions
    rec.accum_adds = int(pos * k.accum_cols)
    rec.buffer_bits = int(pos * (rec.rows_used + g.n_out) * a)
    rec.interconnect_bits = int(pos * (rec.rows_used * a + k.partial_cols * acc))
    # time: each array converts its used columns through its ADCs in turn, all arrays in parallel
    rec.latency_us = pos * P * k.t_read_ns * 1e-3
    # energy windows are the array's, not the converter's: cells conduct while a column is sampled
    # (t_sense_ns); a row stays driven while its array's columns are sampled in turn
    arith = spec.arith
    e = {
        "array": cell_energy_pj(rec.cell_reads, spec, spec.t_sense_ns),
        "adc": adc_energy_pj(rec.adc_conversions, spec, adc_bits, k.cells / k.conv if k.conv else 0.0),
        "dac": dac_energy_pj(rec.dac_conversions, spec, m.dac_bits, m.bit_serial, k.drive_ns),
        "accumulation": (rec.shift_adds + rec.accum_adds) * arith.add_energy_pj(acc),
        "buffer": rec.buffer_bits * spec.buffer_pj_per_bit,
    }
    _set_energy(rec, e)
    n_adc = -(-g.tile_cols // spec.cols_per_adc)
    area = {
        "array": rec.arrays * g.tile_rows * g.tile_cols * spec.cell_area_um2,
        "adc": tiles * n_adc * adc.area_um2(adc_bits),
        "dac": rec.arrays * g.tile_rows * spec.dac_um2 * 2.0 ** (m.dac_bits - 1),
        "accumulation": tiles * n_adc * arith.add_area_um2(acc),
    }
    _set_area(rec, area)


def _price_digital(rec: LayerCost, spec: HardwareSpec, w: int, a: int, weights_from_dram: bool) -> None:
    ar = spec.arith
    lanes = spec.pe_rows * spec.pe_cols
    clock = spec.clock_ghz
    rec.hardware = "digital"
    e: dict[str, float] = {}
    if rec.op in ("linear", "conv"):
        kk = max(rec.fan_in, 1)
        n = rec.weight_shape[0] if rec.weight_shape else 1
        acc = FLOAT_BITS if max(w, a) >= FLOAT_BITS else accumulator_bits(w, a, kk)
        folds_k, folds_n = -(-kk // spec.pe_rows), -(-n // spec.pe_cols)
        rec.buffer_bits = int(rec.weights * w + rec.positions * kk * a * folds_n
                              + rec.positions * n * acc * (2 * folds_k - 1))  # fmt: skip
        rec.interconnect_bits = rec.buffer_bits
        rec.dram_bits = int(rec.size_bytes * 8) if weights_from_dram else 0
        e["digital"] = rec.macs * ar.mac_energy_pj(w, a)
        rec.latency_us = systolic_cycles(kk, n, rec.positions, spec.pe_rows, spec.pe_cols) / clock * 1e-3
    elif rec.op == "matmul":
        rec.buffer_bits = int((rec.in_elements + rec.out_elements) * a)
        e["digital"] = rec.macs * ar.mac_energy_pj(a, a) + rec.digital_ops * ar.op_energy_pj(a)
        rec.latency_us = (rec.macs + rec.digital_ops) / lanes / clock * 1e-3
    elif rec.op == "elementwise":
        rec.buffer_bits = int((rec.in_elements + rec.out_elements) * a)
        e["digital"] = rec.digital_ops * ar.op_energy_pj(a)
        rec.latency_us = rec.digital_ops / lanes / clock * 1e-3
    elif rec.op == "lookup":
        rec.buffer_bits = int(rec.out_elements * a)
        rec.latency_us = rec.out_elements / lanes / clock * 1e-3
    else:
        rec.hardware = "none" if rec.op == "none" else rec.hardware
    e["buffer"] = rec.buffer_bits * spec.buffer_pj_per_bit
    e["dram"] = rec.dram_bits * spec.memory.pj_per_bit
    _set_energy(rec, e)


_E_NAME = {c: energy_field(c) for c in ENERGY_COMPONENTS}
_A_NAME = {c: area_field(c) for c in AREA_COMPONENTS}


def _set_energy(rec: LayerCost, e: dict[str, float]) -> None:
    d = rec.__dict__
    for c, v in e.items():
        d[_E_NAME[c]] = v * 1e-6  # pJ -> µJ


def _set_area(rec: LayerCost, a: dict[str, float]) -> None:
    d = rec.__dict__
    for c, v in a.items():
        d[_A_NAME[c]] = v * 1e-6  # µm² -> mm²


_HW_FIELDS = ("row_tiles", "col_blocks", "slices", "devices", "planes", "tiles", "arrays", "rows_used", "cols_used",
              "dac_bits", "adc_bits", "cell_reads", "dac_conversions", "adc_conversions", "shift_adds", "accum_adds",
              "buffer_bits", "interconnect_bits", "dram_bits")  # fmt: skip
_RESET: dict[str, Any] = {
    **dict.fromkeys(_HW_FIELDS, 0), "utilisation": 0.0, "latency_us": 0.0, "energy_uj": 0.0, "area_mm2": 0.0,
    **{energy_field(c): 0.0 for c in ENERGY_COMPONENTS}, **{area_field(c): 0.0 for c in AREA_COMPONENTS},
}  # fmt: skip


def _blank(rec: LayerCost) -> LayerCost:
    """A copy of ``rec`` with every hardware-dependent field reset."""
    out = object.__new__(LayerCost)
    out.__dict__.update(rec.__dict__)
    out.__dict__.update(_RESET)
    out.extra = dict(rec.extra)
    return out


def price_layer(rec: LayerCost, spec: HardwareSpec, *, on_crossbar: bool | None = None, w_bits: int | None = None,
                a_bits: int | None = None, weights_from_dram: bool = False,
                distance_mm: float | None = None) -> LayerCost:  # fmt: skip
    """One record priced on ``spec`` (a copy).

    ``w_bits`` / ``a_bits`` price the layer as if it had those widths (mixed precision's tables);
    ``on_crossbar``: None follows the record (its own crossbar map, else a Linear/Conv on a CIM spec);
    ``distance_mm``: interconnect wire length; with it the record is finished (interconnect energy,
    the spec's energy factor, totals), without it :func:`price` finishes it for the whole chip."""
    out = _blank(rec)
    if w_bits is not None:
        out.w_bits = int(w_bits)
    if a_bits is not None:
        out.a_bits = int(a_bits)
    w = _eff_bits(out.w_bits, spec, spec.w_bits)
    a = _eff_bits(out.a_bits, spec, spec.a_bits)
    weighted = out.op in ("linear", "conv")
    if weighted:
        out.w_bits = w  # the widths the layer is priced at
    if out.a_bits:
        out.a_bits = a
    if on_crossbar is None:
        on_crossbar = spec.is_cim and weighted
    if on_crossbar and spec.is_cim and weighted:
        m = out.crossbar if (out.crossbar is not None and w_bits is None) else None
        if m is None:
            m = spec_crossbar(out, spec, w, a)
        _price_crossbar(out, m, spec, w, a)
    else:
        _price_digital(out, spec, w, a, weights_from_dram and weighted)
    if distance_mm is not None:
        _finish(out, spec, distance_mm)
    return out


def _finish(rec: LayerCost, spec: HardwareSpec, distance_mm: float) -> None:
    """Interconnect energy over ``distance_mm``, the spec's energy factor, the totals."""
    rec.energy_interconnect_uj = interconnect_energy_pj(rec.interconnect_bits, spec, distance_mm) * 1e-6
    f = spec.energy_factor
    if f != 1.0:
        d = rec.__dict__
        for name in ENERGY_FIELDS:
            d[name] *= f
    rec.energy_uj = rec.total_energy()
    rec.area_mm2 = rec.total_area()


def price(described: Described, spec: HardwareSpec | str, *, map_layers: str = "auto",
          spec_name: str | None = None) -> CostTable:  # fmt: skip
    """Price every record on ``spec`` and add the ``(chip)`` row (module docstring)."""
    if map_layers not in MAP_MODES:
        raise ConfigError(f"map_layers: {map_layers!r} is not allowed; allowed: {', '.join(MAP_MODES)}")
    name = spec_name or (spec if isinstance(spec, str) else "custom")
    hw = get_spec(spec)
    mode = map_layers
    if mode == "auto":
        mode = "analog" if described.has_crossbar_layers else "all"
    weighted = [r for r in described.records if r.op in ("linear", "conv")]
    weight_bytes = sum(r.size_bytes for r in weighted)
    from_dram = (not hw.is_cim) and weight_bytes > hw.buffer_kib * 1024
    rows = []
    for r in described.records:
        on_xbar = hw.is_cim and r.op in ("linear", "conv") and (mode == "all" or r.crossbar is not None)
        rows.append(price_layer(r, hw, on_crossbar=on_xbar, weights_from_dram=from_dram))
    rows.append(_chip_row(described.capture, hw))
    distance = wire_mm(rows)
    for r in rows:
        _finish(r, hw, distance)
    return CostTable(rows, hw, name, interconnect_mm=distance, batch=described.capture.batch)


def wire_mm(rows: list[LayerCost]) -> float:
    """Interconnect length: the mean distance from the centre of a square chip to a point of it,
    ``sqrt(A) / 2``, with ``A`` the area of everything but the ADCs (they sit at the arrays' edges;
    so swapping the ADC model changes only ADC figures)."""
    area = sum(r.total_area() - r.area_adc_mm2 for r in rows)
    return math.sqrt(max(area, 0.0)) / 2.0


def _chip_row(cap: Capture, spec: HardwareSpec) -> LayerCost:
    """Shared by all layers: the global buffer, the digital units, the model input/output in DRAM."""
    a = spec.a_bits if spec.is_cim else (cap.input_dtype.itemsize * 8 if cap.input_dtype.is_floating_point else 32)
    rec = LayerCost(name="(chip)", type=spec.kind.value, op="chip", hardware="none", calls=1,
                    in_elements=cap.input_elements, out_elements=cap.output_elements)  # fmt: skip
    rec.dram_bits = int((cap.input_elements + cap.output_elements) * a)
    _set_energy(rec, {"dram": rec.dram_bits * spec.memory.pj_per_bit})
    lanes = spec.pe_rows * spec.pe_cols
    _set_area(rec, {"buffer": spec.buffer_kib * 1024 * 8 * spec.buffer_um2_per_bit,
                    "digital": lanes * spec.arith.mac_area_um2(spec.w_bits, spec.a_bits)})  # fmt: skip
    return rec
