"""An independent, plain-PyTorch MedicalNet ResNet, written from the architecture description in
shared/reference/medicalnet.md (Tencent/MedicalNet ``models/resnet.py``): keys, shapes and geometry as MedicalNet's.

It shares no code with medzoo or MONAI, so a checkpoint saved from it is a MedicalNet checkpoint, and its outputs are
MedicalNet's own.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DEPTHS = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
          50: ("bottleneck", [3, 4, 6, 3])}


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class ShortcutA(nn.Module):
    """avg_pool3d(kernel 1, stride) then zero channels; detached, as MedicalNet's ``Variable(out.data)``."""

    def __init__(self, planes: int, stride: int) -> None:
        super().__init__()
        self.planes, self.stride = planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        zeros = out.new_zeros(out.shape[0], self.planes - out.shape[1], *out.shape[2:])
        return torch.cat([out.data, zeros], dim=1)


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, planes, stride, dilation), nn.BatchNorm3d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, dilation=dilation), nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv3d(cin, planes, 1, bias=False), nn.BatchNorm3d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride, dilation), nn.BatchNorm3d(planes)
        self.conv3, self.bn3 = nn.Conv3d(planes, planes * 4, 1, bias=False), nn.BatchNorm3d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class MedicalNetResNet(nn.Module):
    """MedicalNet's ResNet: stride-2 stem, layer3/4 stride 1 with dilation 2/4, optional ``conv_seg`` head."""

    def __init__(self, depth: int, shortcut: str, widths=(64, 128, 256, 512), num_seg_classes: int | None = None):
        super().__init__()
        kind, layers = DEPTHS[depth]
        block = Basic if kind == "basic" else Bottleneck
        self.inplanes = widths[0]
        self.conv1 = nn.Conv3d(1, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.layer1 = self._layer(block, widths[0], layers[0], shortcut)
        self.layer2 = self._layer(block, widths[1], layers[1], shortcut, stride=2)
        self.layer3 = self._layer(block, widths[2], layers[2], shortcut, dilation=2)
        self.layer4 = self._layer(block, widths[3], layers[3], shortcut, dilation=4)
        if num_seg_classes is not None:
            c = widths[3] * block.expansion
            self.conv_seg = nn.Sequential(
                nn.ConvTranspose3d(c, 32, 2, stride=2), nn.BatchNorm3d(32), nn.ReLU(inplace=True),
                nn.Conv3d(32, 32, 3, padding=1, bias=False), nn.BatchNorm3d(32), nn.ReLU(inplace=True),
                nn.Conv3d(32, num_seg_classes, 1, bias=False))

    def _layer(self, block, planes, n, shortcut, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            if shortcut == "A":
                downsample = ShortcutA(planes * block.expansion, stride)
            else:
                downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes * block.expansion, 1, stride=stride,
                                                     bias=False), nn.BatchNorm3d(planes * block.expansion))
        blocks = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes, dilation=dilation) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x):
        """Returns ``[stem, layer1, layer2, layer3, layer4]`` and the seg logits (or None)."""
        stem = F.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(F.max_pool3d(stem, 3, stride=2, padding=1))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        seg = self.conv_seg(x4) if hasattr(self, "conv_seg") else None
        return [stem, x1, x2, x3, x4], seg


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics (scaled to keep activations near 1), so comparisons are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype != torch.float32:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:  # BN weight
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.25)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    return model


def save_released(model: MedicalNetResNet, path) -> None:
    """As the released ``resnet_*.pth``: ``{'state_dict': {'module.' + key: ...}}``, backbone only."""
    sd = {f"module.{k}": v for k, v in model.state_dict().items() if not k.startswith("conv_seg.")}
    torch.save({"state_dict": sd}, path)


def save_train_checkpoint(model: MedicalNetResNet, path) -> None:
    """As MedicalNet's ``train.py`` writes: full state dict with ``module.``, the 'ecpoch' typo, an optimizer."""
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"ecpoch": 3, "batch_id": 7, "state_dict": sd, "optimizer": opt.state_dict()}, path)
