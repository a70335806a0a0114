"""Small instances of every registered model with an example input (shared by the sparse tests)."""

from __future__ import annotations

import torch
from torch import nn

from cimkit.models import create, model_input_kind

SPECS = {
    "image": {"in_channels": 1, "num_classes": 10, "input_size": (28, 28)},
    "text": {"num_classes": 65, "input_size": (32,), "vocab_size": 65, "block_size": 32},
    "coords": {"in_features": 2, "out_features": 1},
}
OPTIONS = {"char_gpt": {"size": "tiny"}, "small_cnn": {"width": 8}, "resnet20": {"width": 8}}


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """``(model in eval mode with randomised BatchNorm statistics/affine, example input batch of 4)``."""
    torch.manual_seed(seed)
    kind = model_input_kind(name)
    model = create(name, **SPECS[kind], **OPTIONS.get(name, {})).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():  # trained-looking BatchNorms: a pruned channel must not leak their shift
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    if kind == "text":
        x = torch.randint(0, 65, (4, 32), generator=g)
    elif kind == "coords":
        x = torch.rand(4, 2, generator=g) * 2 - 1
    else:
        x = torch.randn(4, 1, 28, 28, generator=g)
    return model, x
