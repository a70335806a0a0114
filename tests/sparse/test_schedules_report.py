"""Schedules against their formulas; required ADC bits against a hand count; latency measurement."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from cimkit.sparse import SparsityConfig, sparsify_
from cimkit.sparse.report import forward_latency_ms, model_record, required_adc_bits
from cimkit.sparse.schedules import cubic_sparsity, gradual_steps, iterative_sparsities
from cimkit.sparse.steps import GradualPruner


def test_cubic_schedule_is_zhu_and_gupta_eq1() -> None:
    s_i, s_f, t0, n, dt = 0.1, 0.9, 100, 10, 50
    for k in range(n + 1):
        t = t0 + k * dt
        assert cubic_sparsity(t, s_i, s_f, t0, n, dt) == pytest.approx(s_f + (s_i - s_f) * (1 - k / n) ** 3, abs=1e-12)
        assert cubic_sparsity(t + dt // 2, s_i, s_f, t0, n, dt) == cubic_sparsity(t, s_i, s_f, t0, n, dt)
    assert cubic_sparsity(0, s_i, s_f, t0, n, dt) == s_i and cubic_sparsity(10**6, s_i, s_f, t0, n, dt) == s_f
    assert gradual_steps(t0, n, dt) == [t0 + k * dt for k in range(n + 1)]
    # prunes fastest first: the increments shrink
    inc = [cubic_sparsity(t0 + (k + 1) * dt, s_i, s_f, t0, n, dt) - cubic_sparsity(t0 + k * dt, s_i, s_f, t0, n, dt)
           for k in range(n)]  # fmt: skip
    assert all(a > b for a, b in itertools.pairwise(inc))


def test_iterative_schedule_removes_the_same_fraction_each_round() -> None:
    s = iterative_sparsities(0.875, 3)
    assert s == pytest.approx([0.5, 0.75, 0.875])
    kept = [1.0] + [1 - x for x in s]
    assert all(b / a == pytest.approx(0.5) for a, b in itertools.pairwise(kept))


def test_gradual_pruner_reaches_the_schedule() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 10))
    cfg = SparsityConfig(sparsity=0.8)
    sparsify_(net, cfg.replace(sparsity=0.0))
    cb = GradualPruner(cfg, 0.0, 0.8, dt=5, n=4, graph=None)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(8, 50)
    seen = []
    for step in range(1, 31):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
        cb.after_step(net, step)
        seen.append(float((net[0].weight == 0).float().mean()))
    for t, s in cb.history:
        assert s == pytest.approx(cubic_sparsity(t, 0.0, 0.8, 0, 4, 5))
    assert seen[-1] == pytest.approx(0.8, abs=1e-3)
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(seen))  # monotone: pruned weights stay pruned


def test_required_adc_bits_is_the_column_partial_sum_range() -> None:
    lin = nn.Linear(6, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0, 0.25, 1.0], [0.1, 0.0, 0.0, 0.0, 0.0, 0.0]]))
    # 8-bit per-output grid (levels 127): codes of row 0 = 127, 127, 64 (63.5 rounds to 64), 0, 32, 127
    p0 = 127 + 127 + 64 + 0 + 32 + 127
    assert required_adc_bits(lin, lin.weight, 128, 128, w_bits=8, x_bits=1) == math.ceil(math.log2(1 + p0))
    assert required_adc_bits(lin, lin.weight, 128, 128, w_bits=8, x_bits=4) == math.ceil(math.log2(1 + 15 * p0))
    # two row tiles of 3 rows: the larger tile column sum counts
    assert required_adc_bits(lin, lin.weight, 3, 128, w_bits=8) == math.ceil(math.log2(1 + 127 + 127 + 64))


def test_tile_column_pruning_lowers_the_required_adc_bits() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 64))
    x = torch.randn(2, 256)
    dense = model_record(net, x, 128, 128)["total"]["adc_bits"]
    sparsify_(net, SparsityConfig(pattern="tile_column", sparsity=0.875, tile_rows=128, tile_cols=128))
    pruned = model_record(net, x, 128, 128)
    # 16 of 128 rows per column: a range of at most 16 * 127 -> <= 11 bits; dense random weights need more
    assert pruned["total"]["adc_bits"] <= math.ceil(math.log2(1 + 16 * 127)) < dense
    assert pruned["layers"][0]["nonzero"] == 2 * 16 * 64


def test_latency_is_measured_per_model() -> None:
    big, small = nn.Linear(512, 512), nn.Linear(512, 8)
    lat = forward_latency_ms({"big": big, "small": small}, torch.randn(64, 512), rounds=5, warmup=1)
    assert set(lat) == {"big", "small"} and all(v > 0 for v in lat.values())
