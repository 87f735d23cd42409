"""A torchvision-layout 2D ResNet written out in plain torch, as the independent reference for ImageNet imports.

It follows torchvision's ``resnet.py`` (v1.5): 7x7/2 stem with padding 3, BN, ReLU, 3x3/2 max-pool with padding 1;
BasicBlock (two 3x3, stride on the first) or Bottleneck (1x1, 3x3 carrying the stride, 1x1 with expansion 4);
a projection shortcut ``downsample = Sequential(1x1 conv stride s without bias, BN)`` when the shape changes; global
average pooling and ``fc``. Parameter names equal torchvision's, so its ``state_dict()`` is a torchvision file's.
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(cin, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet2d(nn.Module):
    """``forward`` returns the five maps medzoo's encoder returns: [stem (before the max-pool), layer1..layer4]."""

    def __init__(self, depth: int, widths: tuple[int, ...] = (64, 128, 256, 512), in_channels: int = 3,
                 num_classes: int = 1000) -> None:
        super().__init__()
        kind, counts = LAYERS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, (planes, n) in enumerate(zip(widths, counts), start=1):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (i > 1 and j == 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        maps, h = [stem], self.maxpool(stem)
        for i in range(1, 5):
            h = getattr(self, f"layer{i}")(h)
            maps.append(h)
        return maps

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward(x)[-1].mean(dim=(2, 3)))


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Random affine parameters and running statistics in every BatchNorm (so eval-mode BN is not the identity)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def randomised(depth: int, seed: int, **kwargs) -> ResNet2d:
    """A reference network in eval mode with random weights and random BatchNorm statistics."""
    torch.manual_seed(seed)
    return randomise_batchnorm(ResNet2d(depth, **kwargs))
