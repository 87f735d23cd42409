"""A 2D DenseNet-121 baseline behind the encoder contract, as in CheXNet (Rajpurkar et al. 2017).

The network is MONAI's ``DenseNet121`` with ``spatial_dims=2``; its classifier (``class_layers``) is dropped and its
``features`` are read at five points: ``stem`` (after ``relu0``, stride 2), ``block1`` .. ``block3`` (the output of
``denseblock1..3``, strides 4, 8, 16; before the transition that halves channels and size) and ``block4``
(``denseblock4`` then ``norm5`` and a ReLU, stride 32, the map CheXNet pools). Unlike the ResNet family this encoder
has no 3D path and no dilation: a volume ``[B, C, D, H, W]`` is an error and ``output_stride`` must be 32.
``feature_info`` names the submodule whose output is each map (``features.relu0``, ``features.denseblock1..3``,
``act``), and ``out_indices`` selects the maps returned.

Channels: with ``init_features`` f, ``growth_rate`` g and ``block_config`` (b1, b2, b3, b4),
``c0 = f``, ``c1 = f + b1 g``, ``c2 = c1 // 2 + b2 g``, ``c3 = c2 // 2 + b3 g``, ``c4 = c3 // 2 + b4 g``; the defaults
(64, 32, (6, 12, 24, 16)) give (64, 256, 512, 1024, 1024). Parameter names are MONAI's (``features.conv0.weight``,
``features.denseblock1.denselayer1.layers.conv1.weight``, ...), so MONAI DenseNet121 weights load with ``strict=False``
minus the classifier.

Example:
    >>> import torch
    >>> enc = DenseNetEncoder(init_features=8, growth_rate=4, block_config=(1, 1, 1, 1))
    >>> [tuple(f.shape[1:]) for f in enc(torch.zeros(1, 1, 64, 64))]
    [(8, 32, 32), (12, 16, 16), (10, 8, 8), (9, 4, 4), (8, 2, 2)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import DenseNet
from torch import nn

from medzoo.encoders.base import check_encoder_input
from medzoo.encoders.features import stage_contract

__all__ = ["DenseNetEncoder", "densenet_channels"]

_STRIDES = (2, 4, 8, 16, 32)
_STAGE_MODULES = ("features.relu0", "features.denseblock1", "features.denseblock2", "features.denseblock3", "act")


def densenet_channels(init_features: int, growth_rate: int, block_config: Sequence[int]) -> tuple[int, ...]:
    """The five map widths ``(stem, block1, block2, block3, block4)`` of a DenseNet (see the module docstring)."""
    chans, c = [int(init_features)], int(init_features)
    for i, layers in enumerate(block_config):
        c = (c // 2 if i else c) + int(layers) * int(growth_rate)
        chans.append(c)
    return tuple(chans)


class DenseNetEncoder(nn.Module):
    """MONAI DenseNet (2D) returning ``[stem, block1, block2, block3, block4]``.

    Args:
        in_channels: input channels (1 for CXRs; CheXNet used 3 with ImageNet weights).
        output_stride: must be 32 (DenseNet has no dilated variant here).
        widths: not supported (a DenseNet is sized by ``init_features``, ``growth_rate`` and ``block_config``);
            anything but None is an error.
        init_features: stem width (64 for DenseNet-121).
        growth_rate: channels each dense layer adds (32).
        block_config: dense layers per block (6, 12, 24, 16); exactly four blocks.
        bn_size, dropout_prob, norm, act: passed to ``monai.networks.nets.DenseNet``.
        out_indices: the maps to return (default all five; see :mod:`medzoo.encoders.features`).
        name: the registry name written into :meth:`architecture`.

    Shapes: ``x [B, C, H, W]`` -> five maps ``[B, out_channels[i], H / s_i, W / s_i]`` with ``s = 2, 4, 8, 16, 32``
    (rounded up for sizes that are not multiples of 32); the selected ones with ``out_indices``.
    """

    spatial_dims = 2

    def __init__(self, in_channels: int = 1, output_stride: int = 32, widths: Sequence[int] | None = None, *,
                 init_features: int = 64, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
                 bn_size: int = 4, dropout_prob: float = 0.0, norm: Any = "batch",
                 act: Any = ("relu", {"inplace": True}), out_indices: Sequence[int] | int | None = None,
                 name: str = "densenet121") -> None:
        super().__init__()

        if output_stride != 32:
            raise ValueError(f"{name}: output_stride must be 32 (no dilated DenseNet), got {output_stride}")
        if widths is not None:
            raise ValueError(f"{name}: 'widths' applies to ResNets only; size a DenseNet with init_features, "
                             f"growth_rate and block_config, got widths={list(widths)}")
        block_config = tuple(int(b) for b in block_config)
        if len(block_config) != 4 or min(block_config) < 1:
            raise ValueError(f"{name}: block_config must be four positive ints, got {list(block_config)}")
        if int(in_channels) < 1 or int(init_features) < 1 or int(growth_rate) < 1:
            raise ValueError(f"{name}: in_channels, init_features and growth_rate must be >= 1")
        net = DenseNet(spatial_dims=2, in_channels=int(in_channels), out_channels=1, init_features=int(init_features),
                       growth_rate=int(growth_rate), block_config=block_config, bn_size=int(bn_size),
                       dropout_prob=float(dropout_prob), norm=norm, act=act)
        self.features = net.features  # the classifier (net.class_layers) is not part of the encoder
        self.act = nn.ReLU()
        self.name, self.in_channels, self.output_stride = name, int(in_channels), 32
        self.init_features, self.growth_rate, self.block_config = int(init_features), int(growth_rate), block_config
        self.bn_size = int(bn_size)
        self.feature_info, self.out_indices = stage_contract(
            densenet_channels(init_features, growth_rate, block_config), _STRIDES, _STAGE_MODULES, out_indices, name)
        self.out_channels = tuple(self.feature_info.channels())
        self.reductions = tuple((s, s, s) for s in self.feature_info.reduction())
        self.feature_dim = self.out_channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The selected maps (all five by default) of an image ``[B, C, H, W]``; a volume is an error (2D only)."""
        check_encoder_input(x, self.in_channels, self.name)
        if x.dim() != 4:
            raise ValueError(f"{self.name}: 2D only; expected an image [B, C, H, W], got a volume of shape "
                             f"{tuple(x.shape)}. Use a ResNet encoder for CT volumes.")
        f, last = self.features, self.out_indices[-1]
        stem = f.relu0(f.norm0(f.conv0(x)))
        maps, h = [stem], f.pool0(stem)
        for i in range(1, last + 1):
            h = getattr(f, f"denseblock{i}")(h)
            if i < 4:
                maps.append(h)
                h = getattr(f, f"transition{i}")(h) if i < last else h
        if last == 4:
            maps.append(self.act(f.norm5(h)))
        return [maps[i] for i in self.out_indices]

    def architecture(self) -> dict[str, Any]:
        """The architecture contract written into weight metadata and checked when loading."""
        return {"encoder": self.name, "block": "dense", "init_features": self.init_features,
                "growth_rate": self.growth_rate, "block_config": list(self.block_config), "bn_size": self.bn_size,
                "in_channels": self.in_channels, "output_stride": self.output_stride}

    def extra_repr(self) -> str:
        return f"name={self.name}, block_config={list(self.block_config)}, growth_rate={self.growth_rate}"
