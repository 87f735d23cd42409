"""A stand-in for ``torchxrayvision.models`` that exists only while a test saves a file with it.

The classes follow TorchXRayVision's DenseNet (its ``models.py``): ``features`` = conv0 7x7/2, norm0, relu0,
pool0 3x3/2, dense blocks of ``_DenseLayer`` (norm1, relu1, conv1 1x1, norm2, relu2, conv2 3x3, then concatenation)
with ``_Transition`` (norm, relu, conv 1x1, avg-pool 2) between them, then norm5; ``forward`` = ReLU, global average
pooling, ``classifier``, then with ``op_threshs`` a sigmoid and TXV's operating-point normalisation ``op_norm``
(written out here, vectorised as TXV does: 0.5 where the threshold is NaN).
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

MODULE = "torchxrayvision.models"


class _DenseLayer(nn.Sequential):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.add_module("norm1", nn.BatchNorm2d(cin))
        self.add_module("relu1", nn.ReLU())
        self.add_module("conv1", nn.Conv2d(cin, bn_size * growth, 1, bias=False))
        self.add_module("norm2", nn.BatchNorm2d(bn_size * growth))
        self.add_module("relu2", nn.ReLU())
        self.add_module("conv2", nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, super().forward(x)], 1)


class _DenseBlock(nn.Sequential):
    def __init__(self, n: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth, growth, bn_size))


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU())
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


def op_norm(outputs: torch.Tensor, op_threshs: torch.Tensor) -> torch.Tensor:
    t = op_threshs.expand(outputs.shape[0], -1)
    new = torch.zeros(outputs.shape) + 0.5
    leq = (outputs < t) & ~torch.isnan(t)
    gt = ~(outputs < t) & ~torch.isnan(t)
    new[leq] = outputs[leq] / (t[leq] * 2)
    new[gt] = 1.0 - ((1.0 - outputs[gt]) / ((1 - t[gt]) * 2))
    return new


class DenseNet(nn.Module):
    def __init__(self, growth_rate: int = 4, block_config: tuple = (1, 2, 1, 1), num_init_features: int = 8,
                 bn_size: int = 2, num_classes: int = 18, in_channels: int = 1, pathologies: tuple = (),
                 op_threshs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, num_init_features, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU()), ("pool0", nn.MaxPool2d(3, 2, 1))]))
        c = num_init_features
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(n, c, growth_rate, bn_size))
            c += n * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)
        self.pathologies = list(pathologies)
        self.targets = self.pathologies
        self.register_buffer("op_threshs", op_threshs)
        self.upsample = nn.Upsample(size=(224, 224), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(F.relu(self.features(x)), (1, 1)).flatten(1)
        out = self.classifier(out)
        if self.op_threshs is not None:
            out = op_norm(torch.sigmoid(out), self.op_threshs)
        return out


def randomise(model: nn.Module, seed: int, weight_std: float | None = 0.3) -> nn.Module:
    """Random BatchNorm statistics (and weights of std ``weight_std``; None keeps torch's init), eval mode."""
    from tests.zoo.resnet2d_reference import randomise_batchnorm

    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and weight_std is not None:
                m.weight.normal_(0, weight_std)
    return randomise_batchnorm(model)


@contextlib.contextmanager
def installed() -> Iterator[types.ModuleType]:
    """``torchxrayvision`` and ``torchxrayvision.models`` in ``sys.modules`` for the block only."""
    assert "torchxrayvision" not in sys.modules, "a real or leftover torchxrayvision would make the test meaningless"
    pkg, mod = types.ModuleType("torchxrayvision"), types.ModuleType(MODULE)
    for cls in (DenseNet, _DenseLayer, _DenseBlock, _Transition):
        cls.__module__ = MODULE
        setattr(mod, cls.__name__, cls)
    pkg.models = mod
    sys.modules["torchxrayvision"], sys.modules[MODULE] = pkg, mod
    try:
        yield mod
    finally:
        del sys.modules[MODULE], sys.modules["torchxrayvision"]
        for cls in (DenseNet, _DenseLayer, _DenseBlock, _Transition):
            cls.__module__ = __name__
