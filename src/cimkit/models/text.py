"""Character-level model for next-character prediction (tinyshakespeare): embedding + causal Conv1d stack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cimkit.models.registry import MODELS


@MODELS.register(
    "char_cnn", "character-level causal Conv1d network predicting the next character", inputs="text"
)
class CharCNN(nn.Module):
    """Input (B, T) int64 token ids; output (B, vocab) logits for the character after the window."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 65,
        input_size: tuple[int, ...] = (64,),
        embed: int = 32,
        width: int = 128,
        layers: int = 3,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed)
        convs = []
        c = embed
        for i in range(layers):
            convs.append(nn.Conv1d(c, width, kernel, dilation=2**i))
            c = width
        self.convs = nn.ModuleList(convs)
        self.kernel = kernel
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).transpose(1, 2)  # (B, E, T)
        for conv in self.convs:
            pad = (self.kernel - 1) * conv.dilation[0]
            h = F.relu(conv(F.pad(h, (pad, 0))))  # (B, width, T), causal
        return self.head(h[:, :, -1])  # (B, vocab)
