"""A small vision transformer for 28x28 / 32x32 images (``vit_tiny``).

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (ViT), at a size that trains on a CPU:
the image is cut into ``patch x patch`` patches, each embedded linearly (a plain ``nn.Conv2d`` with
kernel = stride = ``patch``, the usual implementation of ViT's patch projection), a learned class
token is prepended (or the tokens are mean-pooled, ``pool = "mean"``), learned position embeddings
are added, and ``depth`` pre-LayerNorm encoder blocks (:class:`cimkit.models.gpt.Block` without
the causal mask) run over the tokens; a final LayerNorm and a linear head give the class logits.

Every weight matrix is a plain leaf a transform can reach: ``patch_embed`` (Conv2d),
``blocks.{i}.attn.q`` / ``.k`` / ``.v`` / ``.proj``, ``blocks.{i}.mlp.fc`` / ``.proj`` and ``head``
(Linears). The attention products (activation x activation) are in
:meth:`cimkit.models.gpt.CausalSelfAttention.attend`, digital on CIM hardware.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cimkit.config import check_choice, check_range
from cimkit.errors import ConfigError
from cimkit.models.gpt import Block
from cimkit.models.registry import MODELS

__all__ = ["VIT_SIZES", "VisionTransformer"]

# named sizes: (depth, heads, width); explicit depth/heads/width override the preset
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (4, 4, 64),  # ~0.2 M parameters at 28x28 / patch 7 / 10 classes
    "micro": (1, 2, 16),  # for tests: a few thousand parameters
    "small": (6, 4, 128),  # ~1.2 M parameters
}


@MODELS.register("vit_tiny", "small vision transformer (patch embedding, pre-LN encoder blocks, class token or mean "
                 "pooling): images (B, C, H, W) -> logits (B, K)", inputs="image")  # fmt: skip
class VisionTransformer(nn.Module):
    """Images (B, in_channels, H, W) -> class logits (B, num_classes).

    ``size`` picks ``(depth, heads, width)`` from :data:`VIT_SIZES` (``tiny`` 4/4/64 by default,
    ~0.2 M parameters on MNIST: 16 patches of 7x7 + a class token); explicit ``depth``, ``heads``,
    ``width`` override it. ``patch``: the patch side (0: the largest divisor of both sides that
    leaves at least 4 patches per side: 7 for 28x28, 8 for 32x32); ``input_size`` must be a multiple
    of it in both dimensions. ``pool``: ``cls`` (the class token's output feeds the head) or ``mean`` (the mean
    over patch tokens; no class token). ``dropout`` applies to the embeddings, attention weights and
    residual branches while training.

    Initialization: Linear and patch weights N(0, 0.02²) (biases 0), position embeddings and the
    class token N(0, 0.02²), the residual output projections N(0, (0.02 / sqrt(2·depth))²) as in GPT-2.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: tuple[int, int] = (28, 28),
        size: str = "tiny",
        depth: int | None = None,
        heads: int | None = None,
        width: int | None = None,
        patch: int = 0,
        pool: str = "cls",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("size", size, VIT_SIZES)
        check_choice("pool", pool, ("cls", "mean"))
        pd, ph, pw = VIT_SIZES[size]
        depth = pd if depth is None else depth
        heads = ph if heads is None else heads
        width = pw if width is None else width
        for name, value in (("depth", depth), ("heads", heads), ("width", width), ("patch", patch)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}: {value!r} is not an integer; allowed: integers >= 1")
            check_range(name, value, 0 if name == "patch" else 1)
        check_range("dropout", dropout, 0.0, 1.0, hi_open=True)
        if width % heads:
            raise ConfigError(f"width: {width} is not a multiple of heads = {heads}; allowed: multiples of heads")
        hw = tuple(input_size)
        if len(hw) != 2:
            raise ConfigError(f"input_size: {hw}; allowed: (height, width)")
        if patch == 0:  # auto: the largest patch that still gives at least 4 patches per side
            g = math.gcd(*hw)
            patch = max(d for d in range(1, g + 1) if g % d == 0 and min(hw) // d >= 4) if min(hw) >= 4 else 1
        if any(s % patch for s in hw):
            raise ConfigError(f"patch: {patch} does not divide the input size {hw}; allowed: a divisor of both sides")
        self.pool = pool
        self.depth, self.heads, self.width, self.patch = depth, heads, width, patch
        n_patches = (hw[0] // patch) * (hw[1] // patch)
        n_tokens = n_patches + (1 if pool == "cls" else 0)
        self.patch_embed = nn.Conv2d(in_channels, width, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.pos_emb = nn.Parameter(torch.zeros(1, n_tokens, width))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout, True, causal=False) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        std_resid = 0.02 / (2 * self.depth) ** 0.5
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, std_resid if name.endswith(("attn.proj", "mlp.proj")) else 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.pos_emb, 0.0, 0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ConfigError(f"vit_tiny input: shape {tuple(x.shape)}; allowed: (batch, channels, height, width)")
        h = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, C)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)  # (B, N + 1, C)
        if h.shape[1] != self.pos_emb.shape[1]:
            raise ConfigError(f"vit_tiny input: {tuple(x.shape[2:])} gives {h.shape[1]} tokens, the model was "
                              f"built for {self.pos_emb.shape[1]}; allowed: the input_size it was built with")  # fmt: skip
        h = self.drop(h + self.pos_emb)  # (B, T, C)
        for block in self.blocks:  # layers, not samples
            h = block(h)  # (B, T, C)
        h = self.ln_f(h)  # (B, T, C)
        z = h[:, 0] if self.cls_token is not None else h.mean(dim=1)  # (B, C)
        return self.head(z)  # (B, K)
