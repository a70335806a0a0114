"""Quantization for transformers: per-group weight grids, per-token dynamic activations, embeddings,
the export refusing what it cannot hold, Hessian mixed precision on a next-token loss."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.mixed.hessian import hessian_trace
from cimkit.models import create
from cimkit.quant import QuantConfig, calibrate, export_quantized, quantize_
from cimkit.quant.functional import per_token_qparams
from cimkit.quant.layers import QuantEmbedding
from cimkit.tasks import get_task


def _linear(gen: torch.Generator, n_in: int = 64, n_out: int = 12) -> nn.Sequential:
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=gen) * torch.logspace(-2, 0, n_in))  # uneven columns
    return nn.Sequential(lin)


@pytest.mark.parametrize("observer", ["minmax", "mse", "percentile"])
@pytest.mark.parametrize("lsq", [False, True])
def test_group_size_equal_to_fan_in_is_per_channel(observer: str, lsq: bool, gen: torch.Generator) -> None:
    net = _linear(gen)
    x = torch.randn(5, 64, generator=gen)
    g = quantize_(copy.deepcopy(net), QuantConfig(w_bits=4, a_bits=None, w_observer=observer, group_size=64, lsq=lsq))
    c = quantize_(copy.deepcopy(net), QuantConfig(w_bits=4, a_bits=None, w_observer=observer, lsq=lsq))
    assert torch.equal(g[0].transformed_weight(), c[0].transformed_weight())
    assert torch.equal(g(x), c(x))


def test_group_grids_are_per_row_and_group(gen: torch.Generator) -> None:
    net = _linear(gen)
    q = quantize_(copy.deepcopy(net), QuantConfig(w_bits=4, a_bits=None, group_size=16))[0]
    codes, scale, zp = q.w_quant.qparams(q.weight)
    assert scale.shape == (12 * 4,) and torch.all(zp == 0)
    groups = q.weight.detach().reshape(12, 4, 16)  # (row, group, g)
    assert torch.allclose(scale.reshape(12, 4), groups.abs().amax(-1) / 7)  # min/max: abs-max -> code 7
    assert torch.allclose(q.transformed_weight(), (codes.reshape(12, 4, 16) * scale.reshape(12, 4, 1)).reshape(12, 64))
    pc = quantize_(copy.deepcopy(net), QuantConfig(w_bits=4, a_bits=None))[0]
    err_g = (q.transformed_weight() - q.weight).pow(2).sum()
    err_c = (pc.transformed_weight() - pc.weight).pow(2).sum()
    assert err_g < err_c  # finer grids, smaller error on uneven columns
    assert q.weight_grid() is None  # no single step per column: crossbars map it like float weights


def test_group_size_must_divide_every_fan_in(gen: torch.Generator) -> None:
    with pytest.raises(ConfigError, match=r"group_size: 24 does not divide the fan-in 64 of layer '0'"):
        quantize_(_linear(gen), QuantConfig(w_bits=4, group_size=24))
    with pytest.raises(ConfigError, match="per_channel"):
        QuantConfig(group_size=32, per_channel=False)


@pytest.mark.parametrize("symmetric", [True, False])
def test_per_token_activations_need_no_calibration_and_are_exact(symmetric: bool, gen: torch.Generator) -> None:
    net = _linear(gen)
    q = quantize_(copy.deepcopy(net), QuantConfig(a_bits=8, a_granularity="token", a_symmetric=symmetric))[0]
    x = torch.randn(3, 7, 64, generator=gen, dtype=torch.float32) * torch.logspace(-3, 1, 7)[:, None]
    calibrate(nn.Sequential(q), [x])  # a no-op for dynamic grids (no warning, no state)
    xq = q.transformed_input(x)
    s, z, qmin, qmax = per_token_qparams(x, 8, symmetric)
    assert s.shape == (3, 7, 1)
    codes = xq / s + z
    k = torch.round(codes)
    assert torch.allclose(codes, k, atol=1e-3) and k.min() >= qmin and k.max() <= qmax
    rel = (xq - x).abs().amax(-1) / x.abs().amax(-1)  # each token within half a step of its own range
    assert float(rel.max()) <= (0.5 / 127 if symmetric else 1.0 / 255) * 1.001


def test_embeddings_stay_float_unless_asked(gen: torch.Generator) -> None:
    m = create("char_gpt", vocab_size=11, block_size=8, size="tiny")
    a = quantize_(copy.deepcopy(m), QuantConfig(w_bits=4, a_bits=None))
    assert not any(isinstance(x, QuantEmbedding) for x in a.modules())
    b = quantize_(copy.deepcopy(m), QuantConfig(w_bits=4, a_bits=None, embeddings=True))
    emb = b.tok_emb
    assert isinstance(emb, QuantEmbedding) and emb.a_quant is None
    ids = torch.randint(0, 11, (2, 8), generator=gen)
    assert torch.equal(emb(ids), emb.transformed_weight()[ids])
    rows = emb.transformed_weight() / emb.w_quant.qparams(emb.weight)[1][:, None]
    assert torch.allclose(rows, torch.round(rows), atol=1e-4)  # every row on its own 4-bit grid
    assert isinstance(b.tok_emb, nn.Embedding) and b.ln_f.__class__ is nn.LayerNorm  # LayerNorm stays float


@pytest.mark.parametrize("cfg", [QuantConfig(w_bits=4, group_size=16), QuantConfig(a_granularity="token"),
                                 QuantConfig(a_bits=None, embeddings=True)])  # fmt: skip
def test_export_refuses_what_it_cannot_hold(cfg: QuantConfig, tmp_path: Path) -> None:
    m = quantize_(create("char_gpt", vocab_size=11, block_size=8, size="tiny"), cfg)
    with pytest.raises(ConfigError, match="export"):
        export_quantized(m, tmp_path / "out")


def test_w8a8_per_token_char_gpt_is_close_to_fp32(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    m = create("char_gpt", vocab_size=11, block_size=8, size="tiny").eval()
    x = torch.randint(0, 11, (4, 8), generator=gen)
    q = quantize_(copy.deepcopy(m), "w8a8_token")
    y, yq = m(x), q(x)
    assert float((yq - y).detach().abs().max()) < 0.02 * float(y.detach().abs().max())
    assert QuantConfig(a_granularity="token").label() == "W8A8/token"
    assert QuantConfig(w_bits=4, group_size=32).label() == "W4g32A8"


def test_hessian_takes_the_tasks_loss(gen: torch.Generator) -> None:
    """Mixed precision on a language model: the Hessian of the next-token loss (per-token CE)
    equals, probe by probe, the Hessian of cross-entropy over the flattened positions."""
    torch.manual_seed(0)
    m = create("char_gpt", vocab_size=11, block_size=8, size="tiny").eval()
    x = torch.randint(0, 11, (6, 8), generator=gen)
    y = torch.randint(0, 11, (6, 8), generator=gen)
    task = get_task("next_token")
    a = hessian_trace(m, [(x, y)], loss_fn=task.loss, max_probes=3, min_probes=3, progress=False)

    def flat_ce(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(out.reshape(-1, 11), t.reshape(-1))

    b = hessian_trace(m, [(x, y)], loss_fn=flat_ce, max_probes=3, min_probes=3, progress=False)
    assert a.names == b.names and len(a.names) == 7
    for n in a.names:
        assert a.trace[n] == pytest.approx(b.trace[n], rel=1e-5, abs=1e-9)
    with pytest.raises((RuntimeError, ValueError)):  # the classification default cannot take (B, T, V) logits
        hessian_trace(m, [(x, y)], max_probes=1, min_probes=1, progress=False)
