"""Every compression method runs on a world of one rank (no peer to hide alignment or shape bugs)."""

from __future__ import annotations

import dist_workers as w
import torch

from cimkit.dist import spawn


def test_all_methods_on_one_rank() -> None:
    out = spawn(w.one_rank_all_methods, 1, timeout_s=120)[0]
    assert set(out) == {"none", "fp16", "bf16", "powersgd", "terngrad", "qsgd", "topk"}
    for method, (got, _) in out.items():
        assert all(bool(torch.isfinite(g).all()) for g in got), method
    for g, r in zip(*out["none"]):  # one rank: the "average" is the local gradient
        torch.testing.assert_close(g, r)
    for g, r in zip(*out["fp16"]):
        torch.testing.assert_close(g, r, atol=1e-3, rtol=1e-2)
    for g, r in zip(*out["terngrad"]):  # each entry 0 or ±s of its layer, never against g's sign
        assert bool(torch.all(g * r >= 0)) and g.abs().unique().numel() <= 2
    for g, r in zip(*out["topk"]):  # at most ceil(1% of entries) nonzero, taken from g + residual
        assert int((g != 0).sum()) <= max(1, -(-r.numel() // 100))
