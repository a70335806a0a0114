"""BitLinear (BitNet b1.58): exact ternary weights and per-token activation grids, the transform's
round trip, crossbars programmed on the ternary levels, and the MatMul-free style model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cimkit.experiment  # noqa: F401  (loads the plugins)
from cimkit import analog
from cimkit.errors import ConfigError
from cimkit.lm import BitConfig, BitLayer, bit_layers, bitlinear_, linear_recurrence
from cimkit.models import create
from cimkit.nn import undo_
from cimkit.quant import QuantConfig, quantize_


def _layer(gen: torch.Generator, norm: bool = False, dtype: torch.dtype = torch.float64) -> nn.Module:
    lin = nn.Linear(24, 7).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(7, 24, generator=gen, dtype=dtype) * 0.05)
    return bitlinear_(nn.Sequential(lin), BitConfig(norm=norm, skip=[]))


def test_ternary_weights_are_exactly_absmean_codes(gen: torch.Generator) -> None:
    layer = _layer(gen)[0]
    w = layer.weight.detach()
    gamma = w.abs().mean()  # BitNet b1.58 eq. 1-3: one scale per tensor
    codes = torch.clamp(torch.round(w / gamma), -1, 1)
    q = layer.transformed_weight().detach()
    assert set(torch.unique(q / gamma).tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(q, codes * gamma)
    step, levels = layer.weight_grid()
    assert levels == 1 and torch.equal(step, gamma.reshape(1))


def test_per_token_activation_grid_is_exact(gen: torch.Generator) -> None:
    layer = _layer(gen)[0]
    x = torch.randn(3, 5, 24, generator=gen, dtype=torch.float64) * torch.logspace(-2, 1, 5, dtype=torch.float64)[:, None]
    xq = layer.transformed_input(x)
    s = x.abs().amax(dim=-1, keepdim=True) / 127  # (3, 5, 1) one step per token
    k = xq / s
    assert torch.allclose(k, torch.round(k), atol=1e-9)  # integer codes
    assert torch.allclose(k.abs().amax(dim=-1), torch.full((3, 5), 127.0, dtype=torch.float64))  # abs-max hits the end
    assert torch.equal(torch.round(k), torch.clamp(torch.round(x / s), -127, 127))
    # the straight-through gradient is the identity
    xg = x.clone().requires_grad_(True)
    layer.transformed_input(xg).sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))


def test_forward_is_quantized_norm_then_ternary_linear(gen: torch.Generator) -> None:
    layer = _layer(gen, norm=True)[0]
    with torch.no_grad():
        layer.norm.weight.copy_(torch.rand(24, generator=gen, dtype=torch.float64) + 0.5)
    x = torch.randn(4, 24, generator=gen, dtype=torch.float64)
    xn = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * layer.norm.weight
    s = xn.abs().amax(-1, keepdim=True) / 127
    ref = F.linear(torch.round(xn / s) * s, layer.transformed_weight(), layer.bias)
    assert torch.allclose(layer(x), ref, atol=1e-12)


def test_bitlinear_round_trip_and_refusals(gen: torch.Generator) -> None:
    m = create("char_gpt", vocab_size=11, block_size=8, size="tiny")
    ref = {k: v.clone() for k, v in m.state_dict().items()}
    bitlinear_(m, BitConfig())
    names = [n for n, _ in bit_layers(m)]
    assert "head" not in names and len(names) == 6  # q, k, v, proj, fc, proj; the head (@last) stays float
    with pytest.raises(ConfigError, match="already"):
        bitlinear_(m, BitConfig())
    with pytest.raises(ConfigError, match="transformed weight"):
        quantize_(m, QuantConfig())
    undo_(m)
    assert not bit_layers(m) and m.state_dict().keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())


def test_bitlinear_on_ideal_crossbars_equals_digital(gen: torch.Generator) -> None:
    m = create("bitnet_lm", vocab_size=11, block_size=8, size="tiny").eval()
    x = torch.randint(0, 11, (3, 8), generator=gen)
    a = analog.convert(m, "ideal", "ideal")
    layers = dict(analog.analog_layers(a))
    assert isinstance(layers["blocks.0.mixer.q"], BitLayer)
    with torch.no_grad():
        assert torch.allclose(a(x), m(x), atol=1e-5)
        # the crossbar holds exactly the ternary levels: the effective weight is the ternary weight
        q = layers["blocks.0.mlp.down"]
        assert torch.allclose(q.effective_weight(), q.transformed_weight(), atol=1e-7)
    undo_(a)
    assert not bit_layers(a) and not list(analog.analog_layers(a))


@pytest.mark.parametrize("mixer", ["attention", "mlgru"])
def test_bitnet_lm_trains_and_undoes_to_its_float_twin(mixer: str, gen: torch.Generator) -> None:
    torch.manual_seed(0)
    m = create("bitnet_lm", vocab_size=11, block_size=8, size="tiny", mixer=mixer)
    torch.manual_seed(0)
    f = create("bitnet_lm", vocab_size=11, block_size=8, size="tiny", mixer=mixer, ternary=False)
    x = torch.randint(0, 11, (2, 8), generator=gen)
    out = m(x)
    assert out.shape == (2, 8, 11)
    out.square().mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert all(isinstance(mod, BitLayer) for n, mod in m.named_modules() if isinstance(mod, nn.Linear) and n != "head")
    plain = undo_(copy.deepcopy(m))
    fsd = f.state_dict()
    assert plain.state_dict().keys() == fsd.keys()
    assert all(torch.equal(v, fsd[k]) for k, v in plain.state_dict().items())  # same init, same architecture


@pytest.mark.parametrize("chunk", [1, 3, 16, 64])
def test_linear_recurrence_equals_the_sequential_scan(chunk: int, gen: torch.Generator) -> None:
    b, t, c = 2, 37, 5
    z = torch.randn(b, t, c, generator=gen, dtype=torch.float64) * 4  # gates from ~0 to ~1
    log_f = F.logsigmoid(z)
    x = torch.randn(b, t, c, generator=gen, dtype=torch.float64)
    h = torch.zeros(b, c, dtype=torch.float64)
    ref = []
    for i in range(t):  # the reference: one step at a time
        h = log_f[:, i].exp() * h + x[:, i]
        ref.append(h)
    out = linear_recurrence(log_f, x, chunk=chunk)
    assert torch.allclose(out, torch.stack(ref, 1), atol=1e-12)


def test_linear_recurrence_gradient_is_finite_with_saturated_gates(gen: torch.Generator) -> None:
    z = torch.full((1, 40, 3), -60.0, dtype=torch.float64)  # f ≈ e^-60: exp(-A) would overflow a naive scan
    z[..., 1] = 60.0  # f ≈ 1
    z.requires_grad_(True)
    x = torch.randn(1, 40, 3, generator=gen, dtype=torch.float64)
    out = linear_recurrence(F.logsigmoid(z), x)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_bitlinear_is_priced_at_two_bit_weights_and_its_activation_bits(gen: torch.Generator) -> None:
    from cimkit.cost import describe, estimate
    from cimkit.quant import account

    m = _layer(gen, norm=True, dtype=torch.float32)  # Linear(24, 7) with a bias, BitConfig(a_bits=8)
    x = torch.randn(3, 5, 24, generator=gen)  # 5 tokens per sample
    rec = next(r for r in describe(m, x).records if r.op == "linear")
    assert (rec.w_bits, rec.a_bits) == (2, 8)
    assert rec.macs == 5 * 24 * 7 and rec.bops == rec.macs * 2 * 8
    assert rec.size_bytes == 24 * 7 * 2 / 8 + 4 * 1 + 4 * 7  # 2-bit codes, one fp32 γ, fp32 bias
    assert account(m, x).total["avg_w_bits"] == 2.0
    plain = copy.deepcopy(m)
    undo_(plain)
    e_bit = estimate(m, x, "systolic_22nm").total()["energy_uj"]
    e_fp = estimate(plain, x, "systolic_22nm").total()["energy_uj"]
    assert e_bit < e_fp  # the float twin is priced at 32-bit arithmetic
