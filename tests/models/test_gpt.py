"""char_gpt: shapes, causality, size, Linear leaves, generation and that it learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.models import create
from cimkit.models.gpt import generate
from cimkit.tasks import get_task


def tiny(vocab: int = 65, block: int = 16, **kw) -> nn.Module:
    torch.manual_seed(0)
    return create("char_gpt", vocab_size=vocab, block_size=block, size="tiny", **kw)


def test_output_shape_and_finite() -> None:
    m = tiny(vocab=40, block=16)
    out = m(torch.randint(0, 40, (3, 11)))
    assert out.shape == (3, 11, 40) and torch.isfinite(out).all()


def test_causal() -> None:
    # logits at positions <= t must not depend on tokens after t; positions > t must
    m = create("char_gpt", vocab_size=30, block_size=24, n_layer=2, n_head=2, n_embd=32).eval()
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 30, (2, 24), generator=g)
    t = 9
    b = a.clone()
    b[:, t + 1 :] = torch.randint(0, 30, (2, 24 - t - 1), generator=g)
    assert not torch.equal(a[:, t + 1 :], b[:, t + 1 :])
    la, lb = m(a), m(b)  # (2, 24, 30)
    assert torch.allclose(la[:, : t + 1], lb[:, : t + 1], atol=1e-6, rtol=0)
    assert (la[:, t + 1 :] - lb[:, t + 1 :]).abs().max() > 1e-3


def test_default_size_parameter_count() -> None:
    # nanoGPT's CPU config (4 layers, 4 heads, 128 wide); untied head: 826,433 weights at vocab 65 / block 128
    m = create("char_gpt", vocab_size=65, block_size=128)
    n = sum(p.numel() for p in m.parameters())
    print(f"char_gpt default: {n} parameters")
    assert (m.n_layer, m.n_head, m.n_embd) == (4, 4, 128)
    assert 0.8e6 <= n <= 1.0e6
    assert n == 65 * 128 + 128 * 128 + 4 * (4 * (128 * 128 + 128) + 2 * 128 * 512 + 512 + 128 + 4 * 128) + 2 * 128 + 128 * 65 + 65


def test_every_projection_is_a_linear_leaf_that_forward_uses() -> None:
    m = tiny(n_layer=2)
    mods = dict(m.named_modules())
    names = [f"blocks.{i}.{s}" for i in range(2) for s in ("attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc", "mlp.proj")]
    names.append("head")
    for n in names:
        assert type(mods[n]) is nn.Linear and not list(mods[n].children()), n
    linears = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)]
    assert sorted(linears) == sorted(names)
    assert not any(isinstance(mod, nn.MultiheadAttention) for mod in m.modules())
    called: set[str] = set()
    for n in names:
        mods[n].register_forward_hook(lambda mod, i, o, n=n: called.add(n))
    m(torch.randint(0, 65, (2, 5)))
    assert called == set(names)  # a transform swapping any of them changes the output


def test_weight_tying_option() -> None:
    untied, tied = tiny(), tiny(tie_weights=True)
    assert untied.head.weight is not untied.tok_emb.weight
    assert tied.head.weight is tied.tok_emb.weight
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(untied) - n(tied) == 65 * 32


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_embd": 30, "n_head": 4}, "n_embd: 30 is not a multiple of n_head"),
        ({"n_layer": 0}, r"n_layer: 0 is out of range"),
        ({"n_head": -1}, r"n_head: -1 is out of range"),
        ({"size": "huge"}, r"size: 'huge' is not allowed"),
        ({"dropout": 1.0}, r"dropout: 1.0 is out of range"),
    ],
)
def test_bad_options(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create("char_gpt", **kw)


def test_input_longer_than_block_size() -> None:
    m = tiny(block=8)
    with pytest.raises(ConfigError, match="longer than block_size = 8"):
        m(torch.zeros(1, 9, dtype=torch.long))


def test_generate_reproducible_and_cropped() -> None:
    m = tiny(block=8)
    seen: list[int] = []
    m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    prompt = torch.randint(0, 65, (2, 3))
    a = generate(m, prompt, 20, generator=torch.Generator().manual_seed(1))
    b = generate(m, prompt, 20, generator=torch.Generator().manual_seed(1))
    c = generate(m, prompt, 20, generator=torch.Generator().manual_seed(2))
    assert a.shape == (2, 23) and torch.equal(a[:, :3], prompt)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert max(seen) == 8 and seen[:6] == [3, 4, 5, 6, 7, 8] and m.training  # mode restored


def test_generate_greedy_and_top1() -> None:
    m = tiny(block=8).eval()
    prompt = torch.randint(0, 65, (2, 10))
    out = generate(m, prompt, 1, temperature=0)
    assert torch.equal(out[:, -1], m(prompt[:, -8:])[:, -1].argmax(-1))  # cropped to the last 8
    top1 = generate(m, prompt, 1, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top1, out)
    with pytest.raises(ConfigError, match="temperature"):
        generate(m, prompt, 1, temperature=-1.0)


def test_learns_a_repeated_pattern() -> None:
    # a period-8 cycle of distinct tokens: every next token is determined, so the loss can go to 0
    torch.manual_seed(0)
    cycle = torch.randperm(16)[:8]  # (8,)
    stream = cycle.repeat(8)  # (64,)
    x = torch.stack([stream[i : i + 16] for i in range(0, 40, 5)])  # (8, 16)
    y = torch.stack([stream[i + 1 : i + 17] for i in range(0, 40, 5)])  # (8, 16)
    m = create("char_gpt", vocab_size=16, block_size=16, size="tiny")
    task = get_task("next_token")
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    with torch.no_grad():
        first = float(task.loss(m(x), y))
    for _ in range(150):
        loss = task.loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(task.loss(m(x), y))
    print(f"repeated pattern: loss {first:.3f} -> {final:.4f} nats/token after 150 Adam steps")
    assert first > 2.0  # ~ln 16 = 2.77 at initialization
    assert final < 0.5, final
