"""Sharding without processes: rank slices of each global batch are disjoint, cover it in order,
follow the shared seeded permutation; sweep items split and gather back in order."""

from __future__ import annotations

import pytest
import torch

from cimkit.data import TensorLoader
from cimkit.dist import ShardedLoader, SingleProcess, gather_items, shard_indices, split_items
from cimkit.errors import ConfigError


def _loader(n: int = 50, bs: int = 12, shuffle: bool = True, **kw) -> TensorLoader:
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)  # sample i holds the value i
    return TensorLoader(x, torch.arange(n), bs, shuffle=shuffle, seed=5, **kw)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
def test_rank_slices_partition_each_global_batch(world: int, shuffle: bool) -> None:
    ref = _loader(shuffle=shuffle)
    shards = [ShardedLoader(_loader(shuffle=shuffle), r, world) for r in range(world)]
    for epoch in (0, 3):
        ref.set_epoch(epoch)
        for s in shards:
            s.set_epoch(epoch)
        batches = list(ref)
        per_rank = [list(s) for s in shards]
        kept = [b for b in batches if len(b[1]) >= world]  # a tail batch smaller than W is dropped
        assert all(len(p) == len(kept) == len(s) for p, s in zip(per_rank, shards))
        for j, (xb, yb) in enumerate(kept):
            parts = [per_rank[r][j] for r in range(world)]
            assert torch.equal(torch.cat([p[1] for p in parts]), yb)  # disjoint, covering, in order
            assert torch.equal(torch.cat([p[0] for p in parts]), xb)
            sizes = [len(p[1]) for p in parts]
            assert max(sizes) - min(sizes) <= 1
        assert sum(s.num_samples for s in shards) == sum(len(b[1]) for b in kept)
    assert all(s.epoch == 4 for s in shards)  # iteration advanced the shared epoch like TensorLoader


def test_tail_smaller_than_world_is_dropped_on_every_rank() -> None:
    # 50 = 4·12 + 2: with 3 ranks the 2-sample tail would leave rank 2 empty
    shards = [ShardedLoader(_loader(), r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert len(ShardedLoader(_loader(), 0, 2)) == 5


def test_different_epochs_give_different_orders() -> None:
    s = ShardedLoader(_loader(), 0, 2)
    a = torch.cat([yb for _, yb in s])
    b = torch.cat([yb for _, yb in s])
    assert not torch.equal(a, b)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="TensorLoader"):
        ShardedLoader([(torch.zeros(1), torch.zeros(1))], 0, 2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"rank: 2 is out of range; allowed: integers in \[0, 1\]"):
        ShardedLoader(_loader(), 2, 2)
    with pytest.raises(ConfigError, match="world_size: 0"):
        shard_indices(torch.arange(4), 0, 0)


def test_shard_indices_and_items() -> None:
    idx = torch.arange(10)
    assert torch.equal(torch.cat([shard_indices(idx, r, 3) for r in range(3)]), idx)
    items = list(range(11))
    parts = [split_items(items, r, 4) for r in range(4)]
    assert parts[1] == [1, 5, 9] and gather_items(parts, 11) == items
    with pytest.raises(ValueError, match="results for"):
        gather_items(parts, 12)


def test_single_process_strategy_is_the_identity() -> None:
    st = SingleProcess().setup()
    model = torch.nn.Linear(2, 2)
    loader = _loader()
    assert st.wrap(model) is model and st.unwrap(model) is model and st.shard(loader) is loader
    assert (st.rank, st.world_size, st.is_main, st.is_distributed) == (0, 1, True, False)
    assert st.seed(7) == 7 and st.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    assert st.all_gather_object({"a": 1}) == [{"a": 1}] and st.broadcast_object(3) == 3
    assert st.map(lambda v: v * v, [1, 2, 3]) == [1, 4, 9]
    assert st.comm_stats() == {}
    st.barrier()
    st.teardown()
