"""MLP, LeNet-5 and small Conv-BN-ReLU CNNs for 28x28 / 8x8 / 32x32 images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cimkit.models.registry import MODELS


def _flat_features(features: nn.Module, in_channels: int, input_size: tuple[int, ...]) -> int:
    """Number of features ``features`` produces for one input (a dry run on zeros)."""
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, *input_size)).numel())


@MODELS.register("mlp", "multi-layer perceptron (flatten -> hidden ReLU layers -> classes)")
class MLP(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: tuple[int, ...] = (28, 28),
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        d = in_channels
        for s in input_size:
            d *= s
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, num_classes)


@MODELS.register("lenet5", "LeNet-5 (LeCun 1998) with ReLU and max-pooling; 5x5 convs 6/16, FC 120/84")
class LeNet5(nn.Module):
    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, input_size: tuple[int, ...] = (28, 28)
    ) -> None:
        super().__init__()
        small = min(input_size) < 16  # 8x8 digits: 3x3 convs keep the spatial size meaningful
        k, p = (3, 1) if small else (5, 2)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, k, padding=p), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, k, padding=0 if not small else 1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        n = _flat_features(self.features, in_channels, input_size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(n, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)


def _vgg_features(in_channels: int, cfg: Sequence[int | str]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU()]
            c = int(v)
    return nn.Sequential(*layers), c


@MODELS.register("vgg_small", "VGG-style Conv-BN-ReLU CNN (3x3 convs, widths 16-32-64, max-pool after each), FC head")
class VGGSmall(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: tuple[int, ...] = (28, 28),
        widths: Sequence[int] = (16, 32, 64),
        hidden: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        cfg: list[int | str] = []
        size = min(input_size)
        for w in widths:
            cfg.append(w)
            if size >= 4:
                cfg.append("M")
                size //= 2
        self.features, _ = _vgg_features(in_channels, cfg)
        n = _flat_features(self.features, in_channels, input_size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)


@MODELS.register("small_cnn", "two Conv-BN-ReLU blocks + FC; the fast built-in default (digits in seconds)")
class SmallCNN(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: tuple[int, ...] = (8, 8),
        width: int = 16,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        n = _flat_features(self.features, in_channels, input_size)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(n, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
