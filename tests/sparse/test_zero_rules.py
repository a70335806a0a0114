"""The trace's zero-preservation rules (products with a shifted channel, powers) and layers in another
layout (GPT-2's Conv1D): analysed, pruned, removed and undone consistently."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import cimkit
from cimkit.errors import ConfigError
from cimkit.sparse import SparsityConfig, analyze, sparsify_
from cimkit.sparse.removal import remove

from ._models import build


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, atol=1e-5 * max(1.0, float(b.abs().max())), rtol=1e-5))


class _Mlp(nn.Module):
    """Linear -> an elementwise function of the hidden units -> Linear."""

    def __init__(self, act: str) -> None:
        super().__init__()
        self.fc, self.proj, self.act = nn.Linear(8, 16), nn.Linear(16, 4), act
        self.register_buffer("two", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.act == "gelu_tanh":  # GPT-2's NewGELU: 0.5 h (1 + tanh(c (h + 0.044715 h^3)))
            h = 0.5 * h * (1.0 + torch.tanh(0.7978845608 * (h + 0.044715 * torch.pow(h, 3.0))))
        elif self.act == "square":
            h = h**2
        elif self.act == "shifted":  # 1 + relu(h) reaches the next layer: not zero when h is
            h = 1.0 + torch.relu(h)
        elif self.act == "inverse":
            h = h ** -1.0
        elif self.act == "tensor_power":
            h = torch.pow(h, self.two)
        return self.proj(h)


def _fc_dim(model: nn.Module, x: torch.Tensor):
    return next(d for d in analyze(model, x).dims if d.producers == ["fc"])


@pytest.mark.parametrize("act", ["gelu_tanh", "square"])
def test_zero_preserving_activations_keep_hidden_units_prunable(act: str) -> None:
    torch.manual_seed(0)
    model, x = _Mlp(act).eval(), torch.randn(5, 8)
    d = _fc_dim(model, x)
    assert d.pinned is None and d.size == 16
    sparsify_(model, SparsityConfig(pattern="filter", sparsity=0.5), example_input=x)
    with torch.no_grad():
        ref = model(x)
    small = remove(model, x)
    assert small.fc.out_features == 8 and small.proj.in_features == 8
    with torch.no_grad():
        assert _close(small(x), ref)


@pytest.mark.parametrize(("act", "reason"), [("shifted", "adds a constant"), ("inverse", "pow"),
                                             ("tensor_power", "pow")])  # fmt: skip
def test_activations_that_do_not_keep_zeros_pin_the_units(act: str, reason: str) -> None:
    model, x = _Mlp(act).eval(), torch.randn(5, 8)
    d = _fc_dim(model, x)
    assert d.pinned is not None and reason in d.pinned


_HF = importlib.util.find_spec("transformers") is not None


@pytest.mark.skipif(not _HF, reason="needs the optional 'transformers' package (pip install 'cimkit[hf]')")
def test_analyze_asks_for_standard_layers_first() -> None:
    model, x = build("hf_gpt2")
    with pytest.raises(ConfigError, match="standardize_"):
        analyze(model, x)


@pytest.mark.skipif(not _HF, reason="needs the optional 'transformers' package (pip install 'cimkit[hf]')")
def test_hf_gpt2_heads_and_mlp_units_are_removed_and_undone() -> None:
    """GPT-2's Conv1D layers are swapped for Linears by sparsify_; a head and half the MLP units go;
    the shrunken model and, after undo_, the Conv1D model compute what the masked model did."""
    model, x = build("hf_gpt2")
    sparsify_(model, SparsityConfig(pattern="head", sparsity=0.5), example_input=x)
    sparsify_(model, SparsityConfig(pattern="filter", sparsity=0.5), example_input=x)
    with torch.no_grad():
        ref = model(x)
    small = remove(model, x)
    attn, mlp = small.hf.transformer.h[0].attn, small.hf.transformer.h[0].mlp
    assert attn.num_heads == 1 and attn.split_size == 32  # one of two heads of 32 dimensions left
    assert attn.c_attn.out_features == 96 and attn.c_proj.in_features == 32
    assert mlp.c_fc.out_features == 128 and mlp.c_proj.in_features == 128
    with torch.no_grad():
        assert _close(small(x), ref)
    cimkit.undo_(small)  # back to GPT-2's own Conv1D layers, shrunken
    c_fc = small.hf.transformer.h[0].mlp.c_fc
    assert type(c_fc).__name__ == "Conv1D" and c_fc.weight.shape == (64, 128) and c_fc.nf == 128
    with torch.no_grad():
        assert _close(small(x), ref)
