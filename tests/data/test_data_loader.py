"""TensorLoader: coverage per epoch, determinism per (seed, epoch), drop_last, len, limit; subset."""

from __future__ import annotations

import math

import pytest
import torch

from cimkit.data import TensorLoader, subset
from cimkit.errors import ConfigError, DataError


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n)  # (n,) sample ids
    x = (y * 10).float().view(n, 1, 1).expand(n, 2, 3).contiguous()  # (n, 2, 3) encodes the id
    return x, y


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n,bs", [(103, 10), (100, 10), (5, 8)])
def test_every_sample_once_per_epoch(n: int, bs: int, shuffle: bool) -> None:
    x, y = _data(n)
    loader = TensorLoader(x, y, bs, shuffle=shuffle, seed=4)
    assert len(loader) == math.ceil(n / bs)
    for _ in range(3):  # several passes
        batches = list(loader)
        assert len(batches) == len(loader)
        ids = torch.cat([yb for _, yb in batches])
        assert torch.equal(ids.sort().values, y)
        for xb, yb in batches:
            assert xb.shape[1:] == (2, 3) and len(xb) == len(yb) <= bs
            assert torch.equal(xb[:, 0, 0], yb.float() * 10)  # x and y stay aligned
        if not shuffle:
            assert torch.equal(ids, y)


def test_shuffle_is_a_function_of_seed_and_epoch() -> None:
    x, y = _data(50)
    a = TensorLoader(x, y, 7, shuffle=True, seed=3)
    b = TensorLoader(x, y, 7, shuffle=True, seed=3)
    passes_a = [torch.cat([yb for _, yb in a]) for _ in range(4)]  # epochs 0..3 (auto-advance)
    for e in (2, 0, 3):  # resumed runs pick the epoch explicitly
        b.set_epoch(e)
        assert torch.equal(torch.cat([yb for _, yb in b]), passes_a[e])
    assert not torch.equal(passes_a[0], passes_a[1])  # each epoch reshuffles
    # reference: randperm from Generator().manual_seed(seed + epoch)
    for e in range(4):
        ref = torch.randperm(50, generator=torch.Generator().manual_seed(3 + e))
        assert torch.equal(passes_a[e], ref)
    c = TensorLoader(x, y, 7, shuffle=True, seed=4)
    assert not torch.equal(torch.cat([yb for _, yb in c]), passes_a[0])
    assert a.epoch == 4 and torch.equal(a.order(1), passes_a[1])


def test_drop_last_and_limit() -> None:
    x, y = _data(103)
    dl = TensorLoader(x, y, 10, shuffle=True, drop_last=True)
    batches = list(dl)
    assert len(dl) == len(batches) == 10 and all(len(yb) == 10 for _, yb in batches)
    assert len(torch.cat([yb for _, yb in batches]).unique()) == 100 and dl.num_samples == 100
    lim = TensorLoader(x, y, 10, shuffle=True, seed=1, limit=3)
    full = TensorLoader(x, y, 10, shuffle=True, seed=1)
    got, ref = list(lim), list(full)[:3]
    assert len(lim) == len(got) == 3 and lim.num_samples == 30
    assert all(torch.equal(g[1], r[1]) for g, r in zip(got, ref))
    assert len(TensorLoader(x, y, 200, drop_last=True)) == 0 and list(TensorLoader(x, y, 200, drop_last=True)) == []
    assert len(TensorLoader(x[:0], y[:0], 4)) == 0


def test_loader_argument_errors() -> None:
    x, y = _data(10)
    with pytest.raises(ConfigError, match="batch_size"):
        TensorLoader(x, y, 0)
    with pytest.raises(ConfigError, match="limit"):
        TensorLoader(x, y, 2, limit=-1)
    with pytest.raises(DataError, match="10 samples but y has 9"):
        TensorLoader(x, y[:9], 2)


def test_subset() -> None:
    x, y = _data(100)
    xs, ys = subset(x, y, 30, seed=5)
    assert len(ys) == 30 and len(ys.unique()) == 30
    assert torch.equal(ys, ys.sort().values)  # original order kept
    assert torch.equal(xs[:, 0, 0], ys.float() * 10)
    assert torch.equal(subset(x, y, 30, seed=5)[1], ys) and not torch.equal(subset(x, y, 30, seed=6)[1], ys)
    assert subset(x, y, 500)[1] is y
    with pytest.raises(ConfigError):
        subset(x, y, -1)
