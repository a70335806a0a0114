"""Every pattern has exactly the asked structure; criteria, scopes, per-layer rules and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cimkit.analog.tiling import TileGeometry
from cimkit.errors import ConfigError
from cimkit.sparse import Pattern, SparsityConfig, get_mask, group_view, mask_from_keep, occupancy, sparsify_
from cimkit.sparse.criteria import keep_global, keep_lowest_pruned


def _w(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(7, 24, 3)  # 63 rows
        self.fc1 = nn.Linear(300, 150)
        self.fc2 = nn.Linear(150, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 8)])
def test_nm_has_exactly_n_of_every_m(n: int, m: int) -> None:
    net = sparsify_(Net(), SparsityConfig(pattern="nm", n=n, m=m))
    for layer in (net.conv, net.fc1, net.fc2):
        w = layer.weight.detach()
        flat = w.reshape(w.shape[0], -1)  # (N, C*K): runs along the reduction axis
        ck = flat.shape[1]
        full = ck // m * m
        runs = flat[:, :full].reshape(w.shape[0], -1, m)
        assert bool(((runs != 0).sum(-1) == n).all())  # random weights: never an accidental zero
        if ck > full:  # the partial last run keeps at most n
            assert bool(((flat[:, full:] != 0).sum(-1) <= n).all())
        # the kept ones are the largest of their run
        orig = layer.parametrizations.weight.original.detach().reshape(w.shape[0], -1)[:, :full].reshape(runs.shape)
        kept_min = torch.where(runs != 0, orig.abs(), torch.full_like(orig, math.inf)).amin(-1)
        dropped_max = torch.where(runs == 0, orig.abs(), torch.zeros_like(orig)).amax(-1)
        assert bool((kept_min >= dropped_max).all())


@pytest.mark.parametrize("tile", [(64, 32), (128, 128), (16, 16)])
def test_block_masks_are_whole_physical_arrays(tile: tuple[int, int]) -> None:
    rows, cols = tile
    net = sparsify_(Net(), SparsityConfig(pattern="block", sparsity=0.6, tile_rows=rows, tile_cols=cols))
    for layer in (net.conv, net.fc1):
        w = layer.weight.detach()
        g = TileGeometry.of(tuple(w.shape), rows, cols)
        mask = get_mask(layer)
        mt = g.column_blocks(g.to_tiles(mask))  # (T, R, n_blk, cols)
        used = g.column_blocks(g.to_tiles(torch.ones_like(mask))) > 0  # real (not padded) cells
        per_block = [mt[t, :, b][used[t, :, b]] for t in range(g.n_tiles) for b in range(g.col_blocks)]
        assert all(bool((v == v[0]).all()) for v in per_block)  # each array is kept or dropped whole
        n_blocks = g.n_tiles * g.col_blocks
        dropped = sum(1 for v in per_block if float(v[0]) == 0)
        assert dropped == min(int(0.6 * n_blocks + 1e-9), n_blocks - 1)
        # a dropped block is exactly an unoccupied array of the analog mapping
        assert int((~occupancy(w, rows, cols)).sum()) == dropped


def test_tile_column_keeps_the_budget_in_every_array_column() -> None:
    net = sparsify_(Net(), SparsityConfig(pattern="tile_column", sparsity=0.75, tile_rows=64, tile_cols=64))
    for layer in (net.conv, net.fc1):
        w = layer.weight.detach()
        g = TileGeometry.of(tuple(w.shape), 64, 64)
        nz = g.to_tiles(w).ne(0).sum(1)  # (T, N): non-zeros per column segment
        budget = torch.tensor([math.ceil(0.25 * r) for r in g.rows_used()]).view(-1, 1)
        assert torch.equal(nz, budget.expand_as(nz))


def test_filter_channel_shape_groups() -> None:
    w = _w(6, 4, 3, 3)
    for p, n_groups, size in ((Pattern.FILTER, 6, 36), (Pattern.CHANNEL, 4, 54), (Pattern.SHAPE, 36, 6),
                              (Pattern.UNSTRUCTURED, 216, 1)):  # fmt: skip
        gv = group_view(w, p)
        assert gv.shape == (n_groups, size)
        keep = torch.arange(n_groups) % 2 == 0
        mask = mask_from_keep(keep, p, w.shape)
        # the mask zeroes exactly the weights of the dropped groups
        assert torch.equal(group_view(mask, p), keep.float().view(-1, 1).expand(n_groups, size))
    net = sparsify_(Net(), SparsityConfig(pattern="filter", coupled=False, sparsity=0.5))
    rows = net.fc1.weight.detach().ne(0).any(1)
    assert int(rows.sum()) == 75 and torch.equal(net.fc1.bias.detach().ne(0), rows)  # a pruned filter loses its bias
    net = sparsify_(Net(), SparsityConfig(pattern="shape", sparsity=0.5))
    cols = net.conv.weight.detach().reshape(24, -1).ne(0)
    assert bool((cols.all(0) | ~cols.any(0)).all()) and int(cols.all(0).sum()) == 63 - 31


def test_global_scope_and_keep_min() -> None:
    s = [torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])]
    keeps = keep_global(s, 0.5, keep_min=1)
    # normalised by the layer mean: [0.4, 0.8, 1.2, 1.6] and [2/7, 4/7, 6/7, 8/7, 10/7, 12/7]: lowest five pruned
    assert keeps[0].tolist() == [False, False, True, True]
    assert keeps[1].tolist() == [False, False, False, True, True, True]
    assert keep_lowest_pruned(torch.tensor([3.0, 1.0, 2.0]), 0.99, keep_min=1).tolist() == [True, False, False]
    assert keep_global([torch.tensor([1.0, 1.0]), torch.tensor([5.0, 50.0])], 0.99, keep_min=1)[0].sum() == 1
    net = sparsify_(Net(), SparsityConfig(sparsity=0.5, scope="global"))
    total = sum(m.weight.numel() for m in (net.conv, net.fc1, net.fc2))
    zeros = sum(int((m.weight == 0).sum()) for m in (net.conv, net.fc1, net.fc2))
    assert zeros == int(0.5 * total)


def test_overrides_and_skip_reach_the_layers() -> None:
    cfg = SparsityConfig(sparsity=0.5, overrides={"fc*": {"sparsity": 0.9}, "@last": {"pattern": "nm"}}, skip=["conv"])
    net = sparsify_(Net(), cfg)
    assert get_mask(net.conv) is None
    assert float((net.fc1.weight == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)
    # 2:4 (the rule set later wins for the pattern); 150 inputs: 37 full runs of 4 and a last run of 2 kept whole
    assert int((net.fc2.weight == 0).sum()) == 10 * 37 * 2
    assert bool(((net.fc2.weight[:, :148].reshape(10, -1, 4) != 0).sum(-1) == 2).all())


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="sparsity"):
        SparsityConfig(sparsity=1.0)
    with pytest.raises(ConfigError, match="pattern.*did you mean 'filter'"):
        SparsityConfig(pattern="filtr")
    with pytest.raises(ConfigError, match="n: 5"):
        SparsityConfig(pattern="nm", n=5, m=4)
    with pytest.raises(ConfigError, match="overrides.fc1.sparsty"):
        SparsityConfig(overrides={"fc1": {"sparsty": 0.2}})
    with pytest.raises(ConfigError, match="overrides.fc1.pattern"):
        SparsityConfig(overrides={"fc1": {"pattern": "head"}})
    with pytest.raises(ConfigError, match="example_input"):
        sparsify_(Net(), SparsityConfig(pattern="filter"))
    cfg = SparsityConfig(pattern="block", sparsity=0.25, overrides={"@first": {"tile_rows": 32}})
    assert SparsityConfig.from_toml(cfg.to_toml()) == cfg
