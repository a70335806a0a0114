"""LoRA beside (analog) Linear layers and HaLoRA's regularizer: zero-B adapters equal the base, the
adapters stay digital in both transform orders, merge and undo, the regularizer's gradient against
finite differences, adapters trained under base-weight noise with the base frozen."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import cimkit.experiment  # noqa: F401  (loads the plugins)
from cimkit import analog
from cimkit.analog import HWAConfig
from cimkit.data import TensorLoader
from cimkit.errors import ConfigError
from cimkit.lm import HaLoRARegularizer, LoRAConfig, LoRALinear, halora_penalty, lora_, lora_layers, merge_lora_
from cimkit.lm.lora import spectral_penalty
from cimkit.models import create
from cimkit.nn import undo_
from cimkit.train import TrainConfig, fit


def _gpt() -> nn.Module:
    torch.manual_seed(0)
    return create("char_gpt", vocab_size=11, block_size=8, size="tiny").eval()


def test_zero_b_lora_on_frozen_base_equals_the_base(gen: torch.Generator) -> None:
    base = _gpt()
    x = torch.randint(0, 11, (3, 8), generator=gen)
    ref = base(x)
    m = lora_(copy.deepcopy(base), LoRAConfig(rank=4, alpha=8.0))
    assert len(lora_layers(m)) == 7  # q, k, v, proj, fc, proj, head
    assert torch.equal(m(x), ref)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)


@pytest.mark.parametrize("order", ["lora_then_analog", "analog_then_lora"])
def test_adapters_stay_digital_beside_analog_bases(order: str, gen: torch.Generator) -> None:
    base = _gpt()
    x = torch.randint(0, 11, (3, 8), generator=gen)
    cfg = LoRAConfig(rank=4, init_b="normal", init_std=0.05)
    digital = lora_(copy.deepcopy(base), cfg)
    if order == "lora_then_analog":
        m = analog.convert(digital, "ideal", "ideal")
    else:
        m = lora_(analog.convert(base, "ideal", "ideal"), cfg)
    layers = lora_layers(m)
    assert all(isinstance(w.base, analog.AnalogLayer) for _, w in layers)
    analog_names = {n for n, _ in analog.analog_layers(m)}
    assert analog_names == {f"{n}.base" for n, _ in layers}  # the adapters are never on crossbars
    with torch.no_grad():
        assert torch.allclose(m(x), digital(x), atol=1e-5)  # ideal crossbars + the same digital adapters
    plain = undo_(m)
    assert not lora_layers(plain) and not list(analog.analog_layers(plain))
    assert torch.allclose(plain(x), base(x), atol=1e-6)  # undo drops the adapters


def test_merge_folds_the_update_into_the_base(gen: torch.Generator) -> None:
    m = lora_(_gpt(), LoRAConfig(rank=3, alpha=6.0, init_b="normal", init_std=0.05))
    x = torch.randint(0, 11, (2, 8), generator=gen)
    with torch.no_grad():
        y = m(x)
        w = lora_layers(m)[0][1]
        assert torch.allclose(w.delta_weight(), 2.0 * w.lora_B @ w.lora_A)
        merge_lora_(m)
        assert not lora_layers(m)
        assert torch.allclose(m(x), y, atol=1e-6)


def test_halora_regularizer_gradient_matches_finite_differences(gen: torch.Generator) -> None:
    a = torch.randn(4, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    # ‖AAᵀ‖₂ = σ_max(A)² and ‖BᵀB‖₂ = σ_max(B)²
    val = spectral_penalty(a, b)
    ref = torch.linalg.svdvals(a)[0] ** 2 + torch.linalg.svdvals(b)[0] ** 2
    assert torch.allclose(val, ref, rtol=1e-12)
    assert torch.autograd.gradcheck(spectral_penalty, (a, b), eps=1e-6, atol=1e-7)


def test_halora_penalty_sums_the_layers_and_enters_the_loss(gen: torch.Generator) -> None:
    m = lora_(_gpt(), LoRAConfig(rank=2, init_b="normal", init_std=0.1))
    with torch.no_grad():
        total = sum(float(spectral_penalty(w.lora_A, w.lora_B)) for _, w in lora_layers(m))
    assert float(halora_penalty(m).detach()) == pytest.approx(total, rel=1e-6)
    reg = HaLoRARegularizer(0.5)
    assert float(reg.loss_term(m, 0).detach()) == pytest.approx(0.5 * total, rel=1e-6)
    assert HaLoRARegularizer(0.0).loss_term(m, 0) is None
    with pytest.raises(ConfigError, match="no LoRA adapters"):
        halora_penalty(_gpt())


def test_adapters_train_under_base_noise_with_the_base_frozen(gen: torch.Generator) -> None:
    base = _gpt()
    hwa = HWAConfig(noise="additive_channel", noise_std=0.05, clip="gaussian_channel", seed=1)
    m = analog.convert(base, "ideal", "rram", hwa=hwa)
    lora_(m, LoRAConfig(rank=2))
    frozen = {n: p.detach().clone() for n, p in m.named_parameters() if not p.requires_grad}
    x = torch.randint(0, 11, (16, 8), generator=gen)
    y = torch.randint(0, 11, (16, 8), generator=gen)
    m.train()
    with torch.no_grad():  # training mode: every forward draws new base-weight noise
        assert not torch.equal(m(x), m(x))
    fit(m, TensorLoader(x, y, 8, shuffle=True, seed=0), TrainConfig(epochs=2, batch_size=8, lr=1e-2),
        task="next_token", progress=False, step_hooks=[analog.clip_hook(hwa)],
        callbacks=[HaLoRARegularizer(0.01)])  # fmt: skip
    for n, p in m.named_parameters():
        if n in frozen:  # neither the optimizer nor the clipping hook touched the frozen base
            assert torch.equal(p, frozen[n]), n
    assert any(float(w.lora_B.detach().abs().max()) > 0 for _, w in lora_layers(m))  # the adapters learned
    assert isinstance(lora_layers(m)[0][1], LoRALinear)
