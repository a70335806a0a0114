"""A small decoder-only transformer for character-level language modelling (``char_gpt``).

Architecture (GPT-2 style, Radford et al. 2019, at the sizes of nanoGPT's character-level
Shakespeare configurations): token embedding + learned position embedding, ``n_layer`` pre-LayerNorm
blocks ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``, a final LayerNorm and a linear LM head.

Every weight matrix is its own plain ``nn.Linear`` leaf, so quantization, sparsity and analog-CIM
transforms can reach (and swap) each of them:

* ``blocks.{i}.attn.q`` / ``.k`` / ``.v`` / ``.proj``: the attention projections (C -> C each);
* ``blocks.{i}.mlp.fc`` (C -> 4C, GELU) and ``blocks.{i}.mlp.proj`` (4C -> C);
* ``head`` (C -> vocab).

The two attention products ``softmax(q kᵀ / sqrt(D)) v`` multiply activations by activations (no
stored weights), so on CIM hardware they stay digital; they are computed in
:meth:`CausalSelfAttention.attend` alone, so a cost model can count them there.

>>> import torch
>>> from cimkit.models import create
>>> from cimkit.models.gpt import generate
>>> model = create("char_gpt", vocab_size=65, block_size=128)          # ~0.83 M parameters
>>> logits = model(torch.zeros(2, 16, dtype=torch.long))                 # (2, 16, 65)
>>> prompt = torch.zeros(1, 1, dtype=torch.long)                        # e.g. the id of "\\n"
>>> ids = generate(model, prompt, 200, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(0))
>>> text = dataset.decode(ids[0])     # with ``dataset = load_dataset("tinyshakespeare", ...)``
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cimkit.config import check_choice, check_range
from cimkit.errors import ConfigError
from cimkit.models.registry import MODELS

__all__ = ["GPT_SIZES", "MLP", "Block", "CausalSelfAttention", "CharGPT", "check_token_ids", "generate", "init_gpt_weights"]

# named sizes: (n_layer, n_head, n_embd); explicit n_layer/n_head/n_embd override the preset
GPT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (1, 2, 32),  # for tests: ~21 k parameters at vocab 65 / block 128
    "small": (4, 4, 128),  # nanoGPT's CPU Shakespeare config: ~0.83 M parameters at vocab 65 / block 128
    "medium": (6, 6, 384),  # nanoGPT's "baby GPT" (shakespeare_char): ~10.8 M parameters at block 256
}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` and output ``proj`` Linears.

    ``y = proj(concat_h softmax(q_h k_hᵀ / sqrt(D) + causal mask) v_h)`` with ``D = C / n_head``
    (Vaswani et al. 2017, eq. 1). ``causal=False`` drops the mask (every token attends to every
    other, as in a vision transformer's encoder).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True) -> None:
        super().__init__()
        self.n_head = n_head
        self.causal = causal
        self.q = nn.Linear(n_embd, n_embd, bias=bias)
        self.k = nn.Linear(n_embd, n_embd, bias=bias)
        self.v = nn.Linear(n_embd, n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The activation x activation products ``softmax(q kᵀ / sqrt(D), causal) v`` (digital on CIM).

        Inputs and output (B, H, T, D). Work: ``B·H·T²·D`` multiply-accumulates for ``q kᵀ`` and as
        many for the product with ``v`` when computed densely (a causal mask leaves
        ``T(T+1)/2`` of the ``T²`` scores non-zero), plus ``B·H·T²`` exponentials.
        """
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)  # (B, H, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_head  # the head width D follows from q's width (heads may have been pruned away)
        q = self.q(x).view(B, T, H, -1).transpose(1, 2)  # (B, H, T, D)
        k = self.k(x).view(B, T, H, -1).transpose(1, 2)  # (B, H, T, D)
        v = self.v(x).view(B, T, H, -1).transpose(1, 2)  # (B, H, T, D)
        y = self.attend(q, k, v).transpose(1, 2).reshape(B, T, -1)  # (B, T, H*D)
        return self.resid_drop(self.proj(y))  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward ``proj(GELU(fc(x)))`` with a 4x hidden width."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias, causal)
        self.ln2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # (B, T, C)
        return x + self.mlp(self.ln2(x))  # (B, T, C)


def init_gpt_weights(model: nn.Module, n_layer: int, residual: tuple[str, ...]) -> None:
    """GPT-2's initialisation: N(0, 0.02) for Linear and Embedding weights, zero biases, and
    N(0, 0.02/√(2·n_layer)) for the Linears whose names end in ``residual`` (the projections that
    write into the residual stream)."""
    std_resid = 0.02 / math.sqrt(2 * n_layer)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std_resid if name.endswith(residual) else 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)


def check_token_ids(idx: torch.Tensor, block_size: int, model: str) -> int:
    """The sequence length of ``idx`` ``(B, T)``; a ConfigError naming ``model`` for another shape or
    ``T > block_size``."""
    if idx.dim() != 2:
        raise ConfigError(f"{model} input: shape {tuple(idx.shape)}; allowed: (batch, time) token ids")
    t = int(idx.shape[1])
    if t > block_size:
        raise ConfigError(f"{model} input length: {t} is longer than block_size = {block_size}; "
                          f"allowed: <= {block_size}")  # fmt: skip
    return t


@MODELS.register(
    "char_gpt",
    "small decoder-only transformer (GPT-style, pre-LN, separate q/k/v/proj Linears): ids (B, T) -> logits (B, T, V)",
    inputs="text",
)
class CharGPT(nn.Module):
    """Decoder-only transformer language model: ids (B, T) int64 -> next-token logits (B, T, vocab).

    Sizes: ``size`` picks ``(n_layer, n_head, n_embd)`` from :data:`GPT_SIZES` (``tiny`` 1/2/32,
    ``small`` 4/4/128 (default, ~0.83 M parameters at vocab 65 and block 128), ``medium`` 6/6/384);
    ``n_layer``, ``n_head``, ``n_embd`` given explicitly override the preset. ``block_size`` is the
    longest context (the learned position table has that many rows); a longer input raises
    :class:`~cimkit.errors.ConfigError`. ``dropout`` applies to the embeddings, the attention
    weights and each residual branch while training. ``bias`` adds biases to every Linear and
    LayerNorm.

    ``tie_weights`` (default off) shares the LM head's weight with the token embedding (Press &
    Wolf 2017; saves ``vocab·n_embd`` parameters). Off, every Linear, the head included, is an
    independent leaf that a transform can replace; on, a transform that swaps ``head`` unties it.

    Initialization (GPT-2): weights N(0, 0.02²), biases 0, and the two residual output projections
    (``attn.proj``, ``mlp.proj``) N(0, (0.02 / sqrt(2·n_layer))²) so the residual stream's variance
    does not grow with depth.
    """

    def __init__(
        self,
        vocab_size: int = 65,
        block_size: int = 128,
        size: str = "small",
        n_layer: int | None = None,
        n_head: int | None = None,
        n_embd: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        check_choice("size", size, GPT_SIZES)
        pl, ph, pe = GPT_SIZES[size]
        n_layer = pl if n_layer is None else n_layer
        n_head = ph if n_head is None else n_head
        n_embd = pe if n_embd is None else n_embd
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                            ("n_head", n_head), ("n_embd", n_embd)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}: {value!r} is not an integer; allowed: integers >= 1")
            check_range(name, value, 1)
        check_range("dropout", dropout, 0.0, 1.0, hi_open=True)
        if n_embd % n_head:
            raise ConfigError(f"n_embd: {n_embd} is not a multiple of n_head = {n_head}; allowed: multiples of n_head")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.head = nn.Linear(n_embd, vocab_size, bias=bias)
        self._init_weights()
        if tie_weights:
            self.head.weight = self.tok_emb.weight

    def _init_weights(self) -> None:
        init_gpt_weights(self, self.n_layer, ("attn.proj", "mlp.proj"))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = check_token_ids(idx, self.block_size, "char_gpt")
        pos = torch.arange(t, device=idx.device)  # (T,)
        h = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:  # layers, not samples
            h = block(h)  # (B, T, C)
        return self.head(self.ln_f(h))  # (B, T, V)


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Autoregressive sampling: ``idx`` (B, T0) -> (B, T0 + max_new_tokens) token ids.

    Each step re-runs the model on the last ``model.block_size`` tokens (no KV cache; the context is
    cropped once it is longer than the model's position table), divides the last position's logits
    by ``temperature`` (``0``: greedy argmax), keeps the ``top_k`` largest when given, and samples
    from the softmax with ``generator`` (a seeded :class:`torch.Generator` makes the output
    reproducible). The model is evaluated in eval mode and its mode restored afterwards. Works with
    any model mapping (B, T) ids to (B, T, V) logits; without a ``block_size`` attribute the whole
    sequence is fed each step.
    """
    if idx.dim() != 2:
        raise ConfigError(f"generate idx: shape {tuple(idx.shape)}; allowed: (batch, time) token ids")
    check_range("max_new_tokens", max_new_tokens, 0)
    check_range("temperature", temperature, 0.0)
    if top_k is not None:
        check_range("top_k", top_k, 1)
    block = getattr(model, "block_size", None)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):  # autoregressive: each token depends on the previous one
            ctx = idx if block is None else idx[:, -block:]  # (B, <= block)
            logits = model(ctx)[:, -1, :].float()  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature  # (B, V)
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))  # (B, V)
                probs = torch.softmax(logits, dim=-1)  # (B, V)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt.to(idx.dtype)], dim=1)  # (B, T + 1)
    finally:
        model.train(was_training)
    return idx
