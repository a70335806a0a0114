"""A Hugging Face GPT-2 built from a config goes through every transform: its Conv1D projections
become equivalent Linears (undone exactly), it quantizes, maps onto ideal crossbars (= digital) and
its layers are countable by a layer walk (a cost pass). Skipped, saying so, without transformers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytest.importorskip("transformers", reason="needs the optional 'transformers' package (pip install 'cimkit[hf]')")

import cimkit.experiment  # noqa: F401  (loads the plugins)
from cimkit import analog
from cimkit.models import create
from cimkit.nn import TransposedLinear, select, standardize_, undo_
from cimkit.quant import QuantConfig, calibrate, quantize_


@pytest.fixture(scope="module")
def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=65, n_positions=32, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(cfg).eval()


def _logits(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m(input_ids=x, use_cache=False).logits


def test_conv1d_becomes_an_equivalent_linear_and_back(gpt2: nn.Module, gen: torch.Generator) -> None:
    from transformers.pytorch_utils import Conv1D

    m = copy.deepcopy(gpt2)
    x = torch.randint(0, 65, (2, 16), generator=gen)
    ref = _logits(m, x)
    conv = m.transformer.h[0].attn.c_attn
    w_obj, b_obj = conv.weight, conv.bias
    standardize_(m)
    lin = m.transformer.h[0].attn.c_attn
    assert isinstance(lin, TransposedLinear) and lin.weight.shape == (192, 64) and lin.bias is b_obj
    assert torch.allclose(_logits(m, x), ref, atol=1e-5)
    # every projection is an nn.Linear now: 4 per block (c_attn, c_proj, c_fc, c_proj) + the LM head
    assert len(select(m, nn.Linear)) == 4 * 2 + 1
    undo_(m)
    back = m.transformer.h[0].attn.c_attn
    assert isinstance(back, Conv1D) and back.weight is w_obj and back.weight.shape == (64, 192)
    assert torch.equal(_logits(m, x), ref)


def test_gpt2_quantized_and_on_ideal_crossbars(gpt2: nn.Module, gen: torch.Generator) -> None:
    m = copy.deepcopy(gpt2)
    x = torch.randint(0, 65, (2, 16), generator=gen)
    ref = _logits(m, x)
    q = quantize_(m, QuantConfig(w_bits=8, a_bits=8, a_symmetric=True))
    calibrate(q, [torch.randint(0, 65, (4, 16), generator=gen)])
    yq = _logits(q, x)
    assert float((yq - ref).abs().max()) < 0.05 * float(ref.abs().max())  # W8A8 stays close
    a = analog.convert(q, "ideal", "ideal")
    assert len(list(analog.analog_layers(a))) == 9
    assert torch.allclose(_logits(a, x), yq, atol=1e-4)  # ideal crossbars compute the quantized model
    p = analog.convert(copy.deepcopy(gpt2), "ideal", "ideal")
    assert torch.allclose(_logits(p, x), ref, atol=1e-4)  # and the float one
    assert torch.equal(_logits(undo_(a), x), ref)


def test_hf_gpt2_model_in_the_registry(gen: torch.Generator) -> None:
    m = create("hf_gpt2", vocab_size=65, block_size=16, n_layer=1, n_embd=32, n_head=2).eval()
    x = torch.randint(0, 65, (2, 16), generator=gen)
    with torch.no_grad():
        y = m(x)
        assert y.shape == (2, 16, 65)
        a = analog.convert(m, "ideal", "ideal")
        assert torch.allclose(a(x), y, atol=1e-4)


def test_a_concerns_subclass_of_the_adapter_layer_is_transformed(gpt2: nn.Module) -> None:
    """The adapter's Linear is plain to every concern; a quantized one is not, so masks and removal
    refuse it as they refuse any quantized layer."""
    from cimkit.errors import ConfigError
    from cimkit.nn.transform import holds_transform
    from cimkit.sparse import SparsityConfig, sparsify_
    from cimkit.sparse.removal import remove_

    m = standardize_(copy.deepcopy(gpt2))
    assert not holds_transform(m.transformer.h[0].attn.c_attn)
    quantize_(m, QuantConfig(w_bits=8, a_bits=0))
    assert holds_transform(m.transformer.h[0].attn.c_attn)
    with pytest.raises(ConfigError, match="already transformed"):
        sparsify_(m, SparsityConfig(pattern="unstructured", sparsity=0.5))
    with pytest.raises(ConfigError, match="is transformed"):
        remove_(m, torch.randint(0, 65, (1, 8)))


def test_gpt2_trains_with_weight_noise_and_undoes(gpt2: nn.Module, gen: torch.Generator) -> None:
    from transformers.pytorch_utils import Conv1D

    from cimkit.robust import NoiseConfig, noisy_layers, weight_noise_

    m = copy.deepcopy(gpt2)
    x = torch.randint(0, 65, (2, 16), generator=gen)
    ref = _logits(m, x)
    weight_noise_(m, NoiseConfig(level=0.05))
    assert len(noisy_layers(m)) == 4 * 2 + 1  # every Conv1D projection and the LM head
    assert torch.allclose(_logits(m.eval(), x), ref, atol=1e-5)  # evaluation is clean
    m.train()
    out = m(input_ids=x, use_cache=False).logits
    assert not torch.allclose(out, ref, atol=1e-3)  # training forwards are noisy
    out.square().mean().backward()
    assert m.transformer.h[0].mlp.c_fc.weight.grad is not None  # the gradient reaches the clean weight
    undo_(m)
    back = m.transformer.h[0].mlp.c_fc
    assert isinstance(back, Conv1D) and back.weight.shape == (64, 256)
    assert torch.equal(_logits(m.eval(), x), ref)


def test_gpt2_weight_noise_evaluation_perturbs_every_projection_per_output_channel(gpt2: nn.Module) -> None:
    """perturbed_weights adds level · max_j |W[c, j]| · N(0, 1) to every projection, c the output
    channel (dim 1 of Conv1D's (in, out) weight): the standardized std of the perturbation is the
    level within 4 % (16 384 draws for c_fc), and the clean weights come back."""
    from cimkit.robust import perturbed_weights

    m = copy.deepcopy(gpt2)
    clean = {n: t.detach().clone() for n, t in standardize_(copy.deepcopy(gpt2)).named_parameters()}
    with perturbed_weights(m, 0.02, seed=3) as pm:
        for name in ("transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"):
            w0 = clean[f"{name}.weight"]  # (out, in)
            d = pm.get_submodule(name).weight.detach() - w0
            z = d / w0.abs().amax(dim=1, keepdim=True)
            assert abs(float(z.std()) / 0.02 - 1) < 0.04, name
    for n, t in m.named_parameters():
        assert torch.equal(t.detach(), clean[n]), n


def test_sparsity_records_read_gpt2_projections_as_linears(gpt2: nn.Module) -> None:
    from cimkit.sparse.report import layer_records

    recs = layer_records(gpt2)  # the raw model: Conv1D projections, not standardized
    assert [r["name"] for r in recs] == [r["name"] for r in layer_records(standardize_(copy.deepcopy(gpt2)))]
    assert len(recs) == 4 * 2 + 1 and recs[0]["shape"] == [192, 64]  # (out, in), as the crossbars see it
    assert not isinstance(gpt2.transformer.h[0].attn.c_attn, TransposedLinear)  # a read-only pass
