"""Encoders: the ResNet family on MONAI, and a 2D DenseNet-121 baseline (CheXNet), registered by name.

Every encoder returns stage feature maps, as timm's ``features_only`` models do, and describes them in
``feature_info``; the ResNets are also MONAI ``FlexibleUNet`` backbones (:mod:`medzoo.encoders.flexible_unet`).

Example:
    >>> from medzoo.encoders import create_encoder, list_encoders
    >>> list_encoders()[:3]
    ['densenet121', 'resnet10', 'resnet18']
    >>> create_encoder("resnet50", widths=(8, 16, 32, 64)).out_channels
    (8, 32, 64, 128, 256)
    >>> create_encoder("resnet50", widths=(8, 16, 32, 64), out_indices=(2, 4)).feature_info.channels()
    [64, 256]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medzoo.encoders.base import Encoder, check_encoder_input
from medzoo.encoders.densenet import DenseNetEncoder
from medzoo.encoders.features import FeatureInfo
from medzoo.encoders.flexible_unet import (
    FlexUNetResNet,
    register_flexible_unet_backbone,
    register_flexible_unet_backbones,
)
from medzoo.encoders.resnet import DEFAULT_WIDTHS, RESNET_SPECS, ResNetEncoder
from medzoo.registry import Registry

__all__ = ["ENCODERS", "Encoder", "ResNetEncoder", "DenseNetEncoder", "FeatureInfo", "FlexUNetResNet",
           "create_encoder", "list_encoders", "check_encoder_input", "register_flexible_unet_backbone",
           "register_flexible_unet_backbones", "DEFAULT_WIDTHS", "RESNET_SPECS"]

ENCODERS = Registry("encoder")


def _create_resnet(depth: int, **kwargs: Any) -> ResNetEncoder:
    return ResNetEncoder(depth, name=f"resnet{depth}", **kwargs)


@ENCODERS.register("resnet10")
def resnet10(**kwargs: Any) -> ResNetEncoder:
    """ResNet-10 (BasicBlock [1,1,1,1], shortcut B), MedicalNet's smallest."""
    return _create_resnet(10, **kwargs)


@ENCODERS.register("resnet18")
def resnet18(**kwargs: Any) -> ResNetEncoder:
    """ResNet-18 (BasicBlock [2,2,2,2], shortcut A)."""
    return _create_resnet(18, **kwargs)


@ENCODERS.register("resnet34")
def resnet34(**kwargs: Any) -> ResNetEncoder:
    """ResNet-34 (BasicBlock [3,4,6,3], shortcut A)."""
    return _create_resnet(34, **kwargs)


@ENCODERS.register("resnet50")
def resnet50(**kwargs: Any) -> ResNetEncoder:
    """ResNet-50 (Bottleneck [3,4,6,3], shortcut B)."""
    return _create_resnet(50, **kwargs)


@ENCODERS.register("resnet101")
def resnet101(**kwargs: Any) -> ResNetEncoder:
    """ResNet-101 (Bottleneck [3,4,23,3], shortcut B)."""
    return _create_resnet(101, **kwargs)


@ENCODERS.register("resnet152")
def resnet152(**kwargs: Any) -> ResNetEncoder:
    """ResNet-152 (Bottleneck [3,8,36,3], shortcut B)."""
    return _create_resnet(152, **kwargs)


@ENCODERS.register("resnet200")
def resnet200(**kwargs: Any) -> ResNetEncoder:
    """ResNet-200 (Bottleneck [3,24,36,3], shortcut B)."""
    return _create_resnet(200, **kwargs)


@ENCODERS.register("densenet121")
def densenet121(**kwargs: Any) -> DenseNetEncoder:
    """DenseNet-121 (2D only; MONAI ``DenseNet121``), CheXNet's architecture; sized by ``init_features``,
    ``growth_rate`` and ``block_config`` (defaults 64, 32, (6, 12, 24, 16))."""
    return DenseNetEncoder(name="densenet121", **kwargs)


def create_encoder(name: str, *, in_channels: int = 1, output_stride: int = 32,
                   widths: tuple[int, ...] | None = None, out_indices: Sequence[int] | int | None = None,
                   features_only: bool = True, **kwargs: Any) -> ResNetEncoder | DenseNetEncoder:
    """Build a registered encoder by name.

    Args:
        name: one of :func:`list_encoders` (resnet10/18/34/50/101/152/200, densenet121: 2D only, stride 32).
        in_channels: input channels (a 1-channel pretrained stem is adapted when loading, and reported).
        output_stride: 32, 16 or 8; 8 is MedicalNet's geometry.
        widths: the four stage widths, for tiny models (default 64, 128, 256, 512); ResNets only.
        out_indices: the stages to return, as in timm (default all five: stem, layer1 .. layer4); an int ``n``
            means the last ``n``. ``out_channels``, ``reductions`` and ``feature_info.channels()`` follow it.
        features_only: accepted for timm users; medzoo encoders always return feature maps (classifier heads are
            built by :func:`medzoo.create_model`), so False is an error.
        **kwargs: ``shortcut``, ``bias_downsample``, ``norm`` and ``act`` (MONAI layer specs, applied to every
            layer); for densenet121 ``init_features``, ``growth_rate``, ``block_config``, ``bn_size``, ``norm``,
            ``act``.

    Returns:
        The encoder; see :mod:`medzoo.encoders.base` for its contract.

    Example:
        >>> enc = create_encoder("resnet10", output_stride=8, widths=(8, 16, 32, 64))
        >>> enc.reductions[-1]
        (8, 8, 8)
        >>> enc = create_encoder("resnet10", widths=(8, 16, 32, 64), out_indices=(1, 2, 3))
        >>> enc.feature_info.reduction(), enc.feature_info.module_name()
        ([4, 8, 16], ['layer1', 'layer2', 'layer3'])
    """
    if not features_only:
        raise ValueError(f"create_encoder({name!r}): medzoo encoders return feature maps only (features_only=True); "
                         "build a classifier with medzoo.create_model and a task head")
    return ENCODERS.get(name)(in_channels=in_channels, output_stride=output_stride, widths=widths,
                              out_indices=out_indices, **kwargs)


def list_encoders(pattern: str = "*") -> list[str]:
    """Registered encoder names matching a shell-style pattern."""
    return ENCODERS.list(pattern)
