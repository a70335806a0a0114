"""DDP on 2 gloo ranks (file store, one launch for the whole module).

* DDP with batch B/2 per rank equals one process with batch B (no hook, and PyTorch's all-reduce hook).
* The comm hooks: TernGrad/QSGD unbiased through DDP (statistical, stated tolerance), the shared max
  scaler and its clipping, exact float paths, top-k error feedback, and the bytes each hook sends
  per step against the formulas.
"""

from __future__ import annotations

import math

import dist_workers as w
import pytest
import torch
from stats_check import z_checks

from cimkit.dist import chunk_ids, spawn, terngrad_bucket_bytes, terngrad_scalers

BIG = slice(0, 300)  # compressed
FLOAT = slice(300, 353)  # "tiny" (3 < min_numel 10) and "head" (the last layer): float all-reduce


@pytest.fixture(scope="module")
def both() -> list[dict]:
    return spawn(w.ddp_and_hook_checks, 2, timeout_s=240)


@pytest.fixture(scope="module")
def runs(both: list[dict]) -> list[dict]:
    return [b["hooks"] for b in both]


@pytest.fixture(scope="module")
def eq_runs(both: list[dict]) -> list[dict]:
    return [b["equivalence"] for b in both]


@pytest.fixture(scope="module")
def reference() -> list[torch.Tensor]:
    model, x, y = w.make_problem()
    return w.train_sgd(model, w.make_loader(x, y, batch_size=16))  # one process, global batch 16


@pytest.mark.parametrize("mode", ["no_hook", "allreduce_hook"])
def test_two_ranks_equal_one_process(eq_runs: list[dict], reference: list[torch.Tensor], mode: str) -> None:
    assert eq_runs[0]["batch_sizes"] == eq_runs[1]["batch_sizes"] == [8]  # each rank trains on half of every batch
    moved = max(float((p - q).abs().max()) for p, q in zip(reference, w.train_sgd(*_untrained())))
    assert moved > 0.1  # 8 SGD steps changed the weights, so equality below is not vacuous
    for rank in (0, 1):
        for p_ref, p in zip(reference, eq_runs[rank][mode]):
            torch.testing.assert_close(p, p_ref, atol=1e-6, rtol=1e-5)


def _untrained() -> tuple:
    model, x, y = w.make_problem()
    return model, w.make_loader(x, y), 0  # zero epochs: the initial weights


def test_fp32_bytes_per_step_and_helpers(eq_runs: list[dict]) -> None:
    st = eq_runs[0]["stats"]
    assert st["steps"] == 8 and st["payload_bytes_per_step"] == 4 * eq_runs[0]["numel"]
    assert st["collectives_per_step"] == 1
    assert eq_runs[0]["samples_per_pass"] == 64  # the ranks' shares add up to the data set
    assert eq_runs[0]["rank_seed"] != eq_runs[1]["rank_seed"]  # per-rank seeds
    assert eq_runs[0]["gathered"] == eq_runs[1]["gathered"] == [{"rank": 0}, {"rank": 1}]


# ----------------------------------------------------------------------------- hooks


def _c(outliers: bool = False) -> torch.Tensor:
    return torch.stack([w.probe_grad(r, outliers) for r in (0, 1)])  # (W, 353)


def test_ranks_agree_and_float_part_is_exact(runs: list[dict]) -> None:
    c = _c()
    for name in ("terngrad_max", "qsgd", "topk"):
        g0, g1 = runs[0][name]["grads"], runs[1][name]["grads"]
        assert torch.equal(g0, g1), name  # every rank decodes the same average
        torch.testing.assert_close(g0[:, FLOAT], c[:, FLOAT].mean(0).expand_as(g0[:, FLOAT]), atol=1e-6, rtol=0)


def test_terngrad_hook_is_unbiased_with_the_max_scaler(runs: list[dict]) -> None:
    c = _c()[:, BIG]  # (W, 300)
    g = runs[0]["terngrad_max"]["grads"][:, BIG]  # (steps, 300)
    s = float(c.abs().max())  # per-layer max|g| of each rank, shared as the max over ranks
    # each step's average is (t_0 + t_1)·s/2 with t_r ∈ {-1, 0, 1}
    k = g * 2 / s
    assert torch.allclose(k, k.round(), atol=1e-5) and int(k.round().abs().max()) <= 2
    p = c.abs() / s  # (W, 300) P(nonzero) on each rank
    var = (s * c.abs() - c.square()).sum(0) / 4  # Var of the average of two independent ternaries
    z_checks(g.mean(0), c.mean(0), var, g.shape[0], (p * (1 - p)).amax(0))


def test_terngrad_hook_stddev_scaler_is_shared_max_and_clips(runs: list[dict]) -> None:
    c = _c(outliers=True)[:, BIG]
    s_rank = torch.stack([terngrad_scalers(c[r], scaler="stddev", c=2.5)[0] for r in (0, 1)])
    s = float(s_rank.max())
    assert float(s_rank.min()) < s  # the ranks' scalers differ: sharing the max matters
    assert int((c.abs() > s).sum()) >= 10  # the outliers are clipped
    g = runs[0]["terngrad_std"]["grads"][:, BIG]
    clip = c.clamp(-s, s)
    p = clip.abs() / s
    z_checks(g.mean(0), clip.mean(0), (s * clip.abs() - clip.square()).sum(0) / 4, g.shape[0], (p * (1 - p)).amax(0))
    # a rank-local scaler would give E = mean of clip(c_r, ±s_r): measurably different here
    local = torch.stack([c[r].clamp(-float(s_rank[r]), float(s_rank[r])) for r in (0, 1)]).mean(0)
    assert float((local - clip.mean(0)).abs().max()) > 0.5


def test_qsgd_hook_is_unbiased(runs: list[dict]) -> None:
    c = _c()[:, BIG]
    s_levels, bucket = 3, 64
    chunks, k = chunk_ids([300], bucket)
    nrm = torch.stack([torch.zeros(k).index_add_(0, chunks, c[r].square()).sqrt() for r in (0, 1)])[:, chunks]
    r = s_levels * c.abs() / nrm
    p = r - r.floor()
    var = ((nrm / s_levels).square() * p * (1 - p)).sum(0) / 4
    g = runs[0]["qsgd"]["grads"][:, BIG]
    z_checks(g.mean(0), c.mean(0), var, g.shape[0], (p * (1 - p)).amax(0))


def test_topk_hook_error_feedback_conserves_the_sum(runs: list[dict]) -> None:
    c = _c()[:, BIG]
    g = runs[0]["topk"]["grads"][:, BIG]  # (30, 300) applied (averaged) gradients
    steps = g.shape[0]
    assert int((g != 0).sum(1).max()) <= 2 * 15  # at most K = 15 picks per rank per step
    residual_mean = (runs[0]["topk"]["residual_big"] + runs[1]["topk"]["residual_big"]) / 2
    torch.testing.assert_close(g.sum(0) + residual_mean, steps * c.mean(0), atol=1e-4, rtol=1e-5)


def test_bytes_per_step_match_the_formulas(runs: list[dict]) -> None:
    n_float = 3 + 50
    expect = {
        # ceil(300/4) codes + one float32 scaler + float entries
        "terngrad_max": (terngrad_bucket_bytes(300, 1, n_float), 3),
        "terngrad_std": (math.ceil(300 / 4) + 4 + 4 * n_float, 3),
        # 4-bit codes for s = 3, one float32 norm per chunk of 64 (5 chunks), float entries
        "qsgd": (math.ceil(300 * 4 / 8) + 4 * 5 + 4 * n_float, 2),
        # K = ceil(0.05·300) = 15 (value, index) pairs of 4 + 4 bytes, float entries
        "topk": (8 * 15 + 4 * n_float, 2),
    }
    assert expect["terngrad_max"][0] == 291
    for rank in (0, 1):
        for name, (nbytes, collectives) in expect.items():
            st = runs[rank][name]["stats"]
            assert st["payload_bytes_per_step"] == nbytes, name
            assert st["collectives_per_step"] == collectives, name
            assert st["ring_bytes_per_step"] == nbytes  # W = 2: ring all-reduce and all-gather send the payload


def test_pytorch_hooks_are_counted(runs: list[dict]) -> None:
    numel = 32 * 40 + 32
    assert runs[0]["fp16"]["stats"]["payload_bytes_per_step"] == 2 * numel
    # PowerSGD: 2 vanilla steps (whole buffer), then P (32×1) + Q (40×1) + the uncompressed bias (32)
    st = runs[0]["powersgd"]["stats"]
    assert st["payload_bytes_total"] == 2 * 4 * numel + 2 * 4 * (32 + 40 + 32)
    assert torch.equal(runs[0]["powersgd"]["grad"], runs[1]["powersgd"]["grad"])
