"""Fold eval-mode BatchNorm into the convolution before it, for inference and export.

A BatchNorm in eval mode is an affine map per channel, ``bn(y) = (y - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. After a convolution ``y = W * x + b`` it folds into that convolution:
``W' = W * s`` (per output channel) and ``b' = (b - mean) * s + beta``; the BatchNorm becomes ``nn.Identity``. The
arithmetic is :func:`torch.nn.utils.fusion.fuse_conv_bn_weights`; what is ours is finding the pairs.

Which (convolution, BatchNorm) pairs are folded, by structure only (no tracing, which would miss the 2D path):

- the stem and blocks of MONAI's ``ResNet`` family (``ResNet``, ``ResNetBlock``, ``ResNetBottleneck``), whose
  forward applies ``bnK`` directly to the output of ``convK`` (``K`` in 1, 2, 3);
- consecutive ``(Conv, BatchNorm)`` children of a plain ``nn.Sequential`` (the B-shortcut ``downsample``).

Only BatchNorms that track running statistics are folded. The fused model is meant for inference: it has no
BatchNorm left to train, and its state dict differs from the original's (no ``bn*`` keys, a ``bias`` on every
folded convolution), so save and ship the *unfused* weights and fuse after loading. medzoo encoders run images
through the same modules as volumes (:mod:`medzoo.encoders.dual`), so a fused encoder takes images and volumes
alike: the centre depth slice of a folded kernel is the folded centre slice, since the scale is per output channel.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["fuse_bn", "fold_conv_bn", "find_conv_bn_pairs"]

logger = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RESNET_TYPES = ("ResNet", "ResNetBlock", "ResNetBottleneck")


def _is_monai_resnet_part(module: nn.Module) -> bool:
    """Whether ``module`` is (a subclass of) one of MONAI's ResNet classes, whose ``bnK`` follows ``convK``."""
    return any(c.__name__ in _RESNET_TYPES and c.__module__.startswith("monai.") for c in type(module).__mro__)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, _CONVS) and isinstance(bn, _NORMS) and bn.track_running_stats
            and bn.running_mean is not None and conv.out_channels == bn.num_features)


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str, str]]:
    """The foldable pairs of ``model`` as ``(parent name, conv attribute, bn attribute)``.

    Example:
        >>> seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        >>> find_conv_bn_pairs(seq)
        [('', '0', '1')]
    """
    pairs = []
    for name, module in model.named_modules():
        if type(module) is nn.Sequential:
            keys = list(module._modules)
            for a, b in zip(keys, keys[1:]):
                if _foldable(module._modules[a], module._modules[b]):
                    pairs.append((name, a, b))
        elif _is_monai_resnet_part(module):
            for k in ("1", "2", "3"):
                conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
                if conv is not None and bn is not None and _foldable(conv, bn):
                    pairs.append((name, f"conv{k}", f"bn{k}"))
    return pairs


@torch.no_grad()
def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> None:
    """Fold the eval-mode ``bn`` into ``conv`` in place (``conv`` gains a bias if it had none).

    Args:
        conv: an ``nn.Conv1d/2d/3d`` with weight ``[C_out, C_in / groups, *k]``.
        bn: a BatchNorm over ``C_out`` channels with running statistics.

    Example:
        >>> conv, bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2).eval()
        >>> fold_conv_bn(conv, bn)
        >>> conv.bias.shape
        torch.Size([2])
    """
    if not _foldable(conv, bn):
        raise ValueError(f"cannot fold {type(bn).__name__} into {type(conv).__name__}: need a convolution followed "
                         "by a BatchNorm with running statistics over its output channels")
    trainable = conv.weight.requires_grad
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight if bn.affine else None, bn.bias if bn.affine else None)
    conv.weight = weight.requires_grad_(trainable)
    conv.bias = bias.requires_grad_(trainable)


def fuse_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every foldable eval-mode BatchNorm of ``model`` into its convolution; return the model in eval mode.

    Outputs are unchanged up to float rounding (about 1e-6 relative in fp32) for volumes and, for medzoo
    encoders, images. Use it for inference, TorchScript or ONNX export, after loading weights.

    Args:
        model: any module, typically a :class:`~medzoo.models.MultiTaskModel` or an encoder.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The fused model (``model`` itself when ``inplace``), in eval mode.

    Example:
        >>> from medzoo.encoders import create_encoder
        >>> enc = create_encoder("resnet10", widths=(8, 16, 32, 64)).eval()
        >>> fused = fuse_bn(enc)
        >>> sum(isinstance(m, nn.BatchNorm3d) for m in fused.modules())
        0
        >>> x = torch.randn(1, 1, 16, 32, 32)
        >>> bool(torch.allclose(enc(x)[-1], fused(x)[-1], atol=1e-5))
        True
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    pairs = find_conv_bn_pairs(model)
    for parent, conv_key, bn_key in pairs:
        host = model.get_submodule(parent)
        fold_conv_bn(host._modules[conv_key], host._modules[bn_key])
        host._modules[bn_key] = nn.Identity()
    left = sum(isinstance(m, _NORMS) for m in model.modules())
    logger.info("fuse_bn: folded %d BatchNorm layers into convolutions (%d left unfused)", len(pairs), left)
    return model
