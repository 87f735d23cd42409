"""Fold eval-mode BatchNorm into the convolution before it, for inference and export.

A BatchNorm in eval mode is an affine map per channel, ``bn(y) = (y - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. After a convolution ``y = W * x + b`` it folds into that convolution:
``W' = W * s`` (per output channel) and ``b' = (b - mean) * s + beta``; the BatchNorm becomes ``nn.Identity``.

Which (convolution, BatchNorm) pairs are folded, by structure only (no tracing):

- the stem and blocks of MONAI's ``ResNet`` family (``ResNet``, ``ResNetBlock``, ``ResNetBottleneck``), whose
  forward applies ``bnK`` directly to the output of ``convK`` (``K`` in 1, 2, 3);
- consecutive ``(Conv, BatchNorm)`` children of a plain ``nn.Sequential`` (the B-shortcut ``downsample``).

Only BatchNorms that track running statistics are folded. The fused model is meant for inference: it has no
BatchNorm left to train, and its state dict differs from the original's (no ``bn*`` keys, a ``bias`` on every
folded convolution), so save and ship the *unfused* weights and fuse after loading.

The encoder's 2D path (:class:`medzoo.encoders.ResNetEncoder`) runs a meta-device twin network with centre slices
of the 3D kernels; :func:`fuse_bn` applies the same structural change to that twin, so the fused encoder still
takes images ``[B, C, H, W]`` and volumes ``[B, C, D, H, W]`` alike (the centre slice of a folded kernel is the
folded centre slice, since the scale is per output channel).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

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
    """
    if not _foldable(conv, bn):
        raise ValueError(f"cannot fold {type(bn).__name__} into {type(conv).__name__}: need a convolution followed "
                         "by a BatchNorm with running statistics over its output channels")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(scale)
    w = conv.weight
    bias = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    new_bias = (bias - bn.running_mean) * scale + shift
    conv.weight.copy_(w * scale.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(w.dtype), requires_grad=w.requires_grad)
    else:
        conv.bias.copy_(new_bias)


def _fuse_twin(owner_name: str, twin: nn.Module, pairs: list[tuple[str, str, str]]) -> None:
    """Mirror the folds made under ``owner_name`` on a stateless (meta-device) twin network."""
    prefix = owner_name + "." if owner_name else ""
    for parent, conv_key, bn_key in pairs:
        if not (parent == owner_name or parent.startswith(prefix)):
            continue
        rel = parent[len(prefix):] if parent != owner_name else ""
        host = twin.get_submodule(rel)
        conv = host._modules[conv_key]
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.empty(conv.out_channels, device=conv.weight.device), requires_grad=False)
        host._modules[bn_key] = nn.Identity()


def fuse_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every foldable eval-mode BatchNorm of ``model`` into its convolution; return the model in eval mode.

    Outputs are unchanged up to float rounding (about 1e-6 relative in fp32) for volumes and, for medzoo
    encoders, images through the 2D path. Use it for inference, TorchScript or ONNX export, after loading weights.

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
    for name, module in model.named_modules():
        twin = module.__dict__.get("_twin2d")
        if isinstance(twin, nn.Module):
            if not inplace:
                twin = copy.deepcopy(twin)
                object.__setattr__(module, "_twin2d", twin)
            _fuse_twin(name, twin, pairs)
    left = sum(isinstance(m, _NORMS) for m in model.modules())
    logger.info("fuse_bn: folded %d BatchNorm layers into convolutions (%d left unfused)", len(pairs), left)
    return model
