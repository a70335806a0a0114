"""ResNet-20 for CIFAR-sized inputs (He et al. CVPR 2016, Sec. 4.2): 3 stages x 3 basic blocks, widths 16/32/64."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cimkit.models.registry import MODELS


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@MODELS.register("resnet20", "ResNet-20 (He et al. 2016, CIFAR variant), 0.27M parameters")
class ResNet20(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        input_size: tuple[int, ...] = (32, 32),
        width: int = 16,
        blocks_per_stage: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(blocks_per_stage):
                blocks.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, w, H, W)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, 4w, H/4, W/4)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 4w)
        return self.fc(out)  # (B, num_classes)
