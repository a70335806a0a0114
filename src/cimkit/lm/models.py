"""A ternary language model in the MatMul-free style (``bitnet_lm``).

Zhu, Zhang, Sifferman, Sheaves, Wang, Richmond, Zhou & Eshraghian, "Scalable MatMul-free Language
Modeling", arXiv 2406.02528 (2024): every weight matrix is a BitLinear layer (BitNet b1.58 ternary
weights, 8-bit per-token activations, RMSNorm before quantization; :mod:`cimkit.lm.bitlinear`), the
channel mixer is a gated linear unit and the token mixer is either

* ``mixer = "attention"``: causal multi-head self-attention with BitLinear ``q``/``k``/``v``/``proj``
  (the score and value products stay activation x activation, digital on CIM), or
* ``mixer = "mlgru"``: the MatMul-free linear GRU (MLGRU, Zhu et al. 2024, Sec. 3.3.1), with no
  activation x activation product at all:

  ``f_t = σ(x_t W_f)``, ``c_t = SiLU(x_t W_c)``, ``h_t = f_t ⊙ h_{t-1} + (1 - f_t) ⊙ c_t``,
  ``g_t = σ(x_t W_g)``, ``o_t = (g_t ⊙ h_t) W_o``.

  The recurrence is element-wise and linear in ``h``, so it is computed for all time steps at once
  (:func:`linear_recurrence`), not step by step.

Blocks are pre-norm: ``x + mixer(RMSNorm(x))`` then ``x + GLU(RMSNorm(x))`` with
``GLU(x) = down(SiLU(gate(x)) ⊙ up(x))``. Every projection is its own ``nn.Linear`` leaf turned into
BitLinear by the transform (``ternary = False`` keeps them float: the same architecture in fp32,
and ``cimkit.undo_`` turns a ternary model back into it); the LM ``head`` stays in float, as in BitNet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cimkit.config import check_choice, check_range
from cimkit.errors import ConfigError
from cimkit.lm.bitlinear import BitConfig, RMSNorm, bitlinear_
from cimkit.models.gpt import GPT_SIZES, CausalSelfAttention, check_token_ids, init_gpt_weights
from cimkit.models.registry import MODELS

__all__ = ["GLU", "MLGRU", "BitNetLM", "linear_recurrence"]


def linear_recurrence(log_f: torch.Tensor, x: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """``h_t = f_t ⊙ h_{t-1} + x_t`` for all ``t`` at once (``h_0 = 0``), from ``log f`` and ``x``
    (both (B, T, C)); returns ``h`` (B, T, C).

    ``h_t = Σ_{s≤t} exp(A_t - A_s) x_s`` with ``A = cumsum(log f)``. Computed in chunks of ``chunk``
    steps: inside a chunk as a masked (K x K) product, across chunks by the same formula on the
    chunk-end states, so every exponent is a sum of ``log f <= 0`` (no overflow) and memory is
    ``B·T·K·C`` instead of ``B·T²·C``.
    """
    b, t, c = x.shape
    k = max(1, min(chunk, t))
    pad = (-t) % k
    if pad:
        log_f = F.pad(log_f, (0, 0, 0, pad))
        x = F.pad(x, (0, 0, 0, pad))
    n = (t + pad) // k
    lf = log_f.reshape(b, n, k, c)  # (B, n, K, C)
    xx = x.reshape(b, n, k, c)  # (B, n, K, C)
    a = lf.cumsum(dim=2)  # (B, n, K, C): log of the decay from the chunk's start to each step
    causal = torch.ones(k, k, dtype=torch.bool, device=x.device).tril()  # (K, K) [t, s]: s <= t
    d = (a.unsqueeze(3) - a.unsqueeze(2)).masked_fill(~causal[:, :, None], float("-inf"))  # (B, n, K, K, C)
    h_loc = (d.exp() * xx.unsqueeze(2)).sum(dim=3)  # (B, n, K, C): the chunk's own inputs
    end = h_loc[:, :, -1]  # (B, n, C) state at each chunk's end from its own inputs
    ac = a[:, :, -1].cumsum(dim=1)  # (B, n, C)
    causal_n = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()  # (n, n)
    dn = (ac.unsqueeze(2) - ac.unsqueeze(1)).masked_fill(~causal_n[:, :, None], float("-inf"))  # (B, n, n, C)
    state = (dn.exp() * end.unsqueeze(1)).sum(dim=2)  # (B, n, C): full state at each chunk's end
    carry = torch.cat([torch.zeros_like(state[:, :1]), state[:, :-1]], dim=1)  # (B, n, C) entering each chunk
    h = h_loc + a.exp() * carry.unsqueeze(2)  # (B, n, K, C)
    return h.reshape(b, n * k, c)[:, :t]


class MLGRU(nn.Module):
    """MatMul-free linear GRU token mixer (module docstring); Linears ``f``, ``c``, ``g``, ``o``."""

    def __init__(self, n_embd: int, bias: bool = False) -> None:
        super().__init__()
        self.f = nn.Linear(n_embd, n_embd, bias=bias)
        self.c = nn.Linear(n_embd, n_embd, bias=bias)
        self.g = nn.Linear(n_embd, n_embd, bias=bias)
        self.o = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zf = self.f(x)  # (B, T, C)
        log_f = F.logsigmoid(zf)  # (B, T, C) log f_t
        one_minus_f = torch.sigmoid(-zf)  # (B, T, C) 1 - f_t
        h = linear_recurrence(log_f, one_minus_f * F.silu(self.c(x)))  # (B, T, C)
        return self.o(torch.sigmoid(self.g(x)) * h)  # (B, T, C)


class GLU(nn.Module):
    """Gated linear unit channel mixer ``down(SiLU(gate(x)) ⊙ up(x))`` (Shazeer 2020's SwiGLU)."""

    def __init__(self, n_embd: int, hidden: int, bias: bool = False) -> None:
        super().__init__()
        self.gate = nn.Linear(n_embd, hidden, bias=bias)
        self.up = nn.Linear(n_embd, hidden, bias=bias)
        self.down = nn.Linear(hidden, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, C)


class _Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, mixer: str, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(n_embd)
        self.mixer: nn.Module = (CausalSelfAttention(n_embd, n_head, dropout, bias=False) if mixer == "attention"
                                 else MLGRU(n_embd))  # fmt: skip
        self.norm2 = RMSNorm(n_embd)
        self.mlp = GLU(n_embd, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.norm1(x)))  # (B, T, C)
        return x + self.drop(self.mlp(self.norm2(x)))  # (B, T, C)


@MODELS.register("bitnet_lm", "ternary LM in the MatMul-free style: BitLinear (b1.58) projections, attention or "
                 "MLGRU token mixer, GLU: ids (B, T) -> logits (B, T, V)", inputs="text")  # fmt: skip
class BitNetLM(nn.Module):
    """Ids (B, T) int64 -> next-token logits (B, T, vocab) (module docstring).

    ``size`` picks ``(n_layer, n_head, n_embd)`` from :data:`cimkit.models.gpt.GPT_SIZES` (``small``:
    4/4/128 by default); explicit values override it. ``mixer``: ``attention`` or ``mlgru``.
    ``hidden``: GLU width (0: ``8/3 · n_embd`` rounded up to a multiple of 8, the parameter count of
    a 4x GELU MLP). ``ternary``: BitLinear projections (``a_bits`` activations); false keeps them
    float. Position embeddings are learned (attention only; the recurrence knows the order).
    Initialization: N(0, 0.02²) for every projection and embedding, the residual outputs
    (``mixer.proj`` / ``mixer.o`` / ``mlp.down``) N(0, (0.02 / sqrt(2·n_layer))²).
    """

    def __init__(
        self,
        vocab_size: int = 65,
        block_size: int = 128,
        size: str = "small",
        n_layer: int | None = None,
        n_head: int | None = None,
        n_embd: int | None = None,
        mixer: str = "attention",
        hidden: int = 0,
        ternary: bool = True,
        a_bits: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("size", size, GPT_SIZES)
        check_choice("mixer", mixer, ("attention", "mlgru"))
        pl, ph, pe = GPT_SIZES[size]
        n_layer = pl if n_layer is None else n_layer
        n_head = ph if n_head is None else n_head
        n_embd = pe if n_embd is None else n_embd
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                            ("n_head", n_head), ("n_embd", n_embd)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}: {value!r} is not an integer; allowed: integers >= 1")
            check_range(name, value, 1)
        check_range("hidden", hidden, 0)
        check_range("dropout", dropout, 0.0, 1.0, hi_open=True)
        if mixer == "attention" and n_embd % n_head:
            raise ConfigError(f"n_embd: {n_embd} is not a multiple of n_head = {n_head}; allowed: multiples of n_head")
        hidden = hidden or 8 * math.ceil(8 * n_embd / 3 / 8)
        self.vocab_size, self.block_size, self.n_layer, self.mixer = vocab_size, block_size, n_layer, mixer
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd) if mixer == "attention" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(n_embd, n_head, mixer, hidden, dropout) for _ in range(n_layer))
        self.norm_f = RMSNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self._init_weights()
        if ternary:
            bitlinear_(self, BitConfig(a_bits=a_bits, include=["blocks.*"], skip=[]))

    def _init_weights(self) -> None:
        init_gpt_weights(self, self.n_layer, ("mixer.proj", "mixer.o", "mlp.down"))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = check_token_ids(idx, self.block_size, "bitnet_lm")
        h = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            h = h + self.pos_emb(torch.arange(t, device=idx.device))  # (B, T, C)
        h = self.drop(h)
        for block in self.blocks:  # layers, not samples
            h = block(h)  # (B, T, C)
        return self.head(self.norm_f(h))  # (B, T, V)
