"""ImageNet ResNets (torchvision layout) in medzoo's 3D encoder, by kernel inflation.

torchvision's ResNet-18/34/50/101/152 and medzoo's encoder (MONAI's ResNet) have the same parameter names and the
same geometry at ``output_stride=32``: a 7x7 stem convolution of stride 2 and padding 3, BatchNorm, ReLU, a 3x3 max-pool
of stride 2 and padding 1, then stages of stride 1, 2, 2, 2, with the stride on the 3x3 convolution of a bottleneck
(ResNet v1.5) and a projection shortcut (a 1x1 convolution without bias, then BatchNorm) where the shape changes.
The encoder must therefore use shortcut ``"B"`` without a downsample bias (medzoo's default for 18/34 is MedicalNet's
parameter-free ``"A"``); :func:`imagenet_encoder` builds it so.

Each 2D kernel ``[O, I, k, k]`` becomes a 3D kernel ``[O, I, k, k, k]`` (the depth the encoder declares):

* ``inflate="centre"``: the 2D kernel is the centre depth slice, the other slices are zero. The encoder's 2D path
  reads exactly the centre slices, so on an image ``[B, C, H, W]`` it computes the 2D ImageNet network; on a volume
  each slice only sees its own plane in every convolution (strides still subsample depth).
* ``inflate="mean"``: I3D (Carreira & Zisserman 2017): the kernel divided by its depth, repeated over depth, so a
  volume that is constant along depth gives the 2D activations (away from the depth borders).

The 3-channel stem is adapted to the encoder's ``in_channels`` by :func:`medzoo.zoo.state.adapt_input_conv`: summed
over RGB for 1 channel (as timm does), repeated and rescaled by ``3 / in_channels`` otherwise. BatchNorm statistics
are copied. The 1000-class ``fc`` is not part of the encoder and is reported as ignored.

Example:
    >>> import torch
    >>> enc = imagenet_encoder(18, in_channels=1, widths=(8, 16, 32, 64))
    >>> sorted(k for k in enc.state_dict() if k.startswith("layer2.0.downsample"))[:2]
    ['layer2.0.downsample.0.weight', 'layer2.0.downsample.1.bias']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from medzoo.data.presets import IMAGENET_MEAN, IMAGENET_STD, imagenet_contract
from medzoo.encoders import RESNET_SPECS, create_encoder
from medzoo.models.multitask import MultiTaskModel
from medzoo.zoo.medicalnet import block_layout, find_encoder
from medzoo.zoo.report import LoadReport
from medzoo.zoo.state import load_state_with_report, read_weights, strip_prefixes, unwrap_state_dict

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INFLATE_MODES", "detect_resnet2d", "from_imagenet", "imagenet_encoder",
           "imagenet_preprocessing", "inflate_kernel", "load_imagenet", "load_resnet2d_state"]

INFLATE_MODES = ("centre", "mean")
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)


def inflate_kernel(weight: torch.Tensor, depth: int, mode: str = "centre") -> torch.Tensor:
    """A 2D kernel ``[O, I, kh, kw]`` as a 3D kernel ``[O, I, depth, kh, kw]`` (see the module docstring).

    Example:
        >>> w = inflate_kernel(torch.ones(1, 1, 3, 3), 3)
        >>> w[0, 0, :, 1, 1].tolist()
        [0.0, 1.0, 0.0]
    """
    if mode not in INFLATE_MODES:
        raise ValueError(f"inflate must be one of {list(INFLATE_MODES)}, got {mode!r}")
    if weight.dim() != 4:
        raise ValueError(f"expected a 2D convolution kernel [O, I, kh, kw], got shape {tuple(weight.shape)}")
    if mode == "mean":
        return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
    out = weight.new_zeros(*weight.shape[:2], depth, *weight.shape[2:])
    out[:, :, depth // 2] = weight  # the slice the encoder's 2D path reads
    return out


def detect_resnet2d(state: dict[str, torch.Tensor], source: str = "<state dict>") -> dict[str, Any]:
    """Depth, block, blocks per stage, widths, shortcut, input channels and classes of a torchvision-layout ResNet.

    Raises:
        ValueError: not a 2D ResNet of depth 18/34/50/101/152 (the message names the key that is off).
    """
    stem = state.get("conv1.weight")
    if stem is None or stem.dim() != 4:
        found = "nothing" if stem is None else f"shape {tuple(stem.shape)}"
        raise ValueError(f"{source}: not a 2D (torchvision-layout) ResNet: 'conv1.weight' must be a 2D kernel "
                         f"[64, C, 7, 7], found {found} (3D MedicalNet files go through `medzoo convert medicalnet`)")
    block, counts = block_layout(state)
    depths = [d for d in IMAGENET_DEPTHS if RESNET_SPECS[d][0] == block and RESNET_SPECS[d][1] == tuple(counts)]
    if not depths:
        raise ValueError(f"{source}: {block} blocks per stage {counts} match no ImageNet ResNet depth "
                         f"{list(IMAGENET_DEPTHS)}")
    fc = state.get("fc.weight")
    return {
        "depth": depths[0], "block": block, "layers": counts,
        "widths": [int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5)],
        "shortcut": "B" if any(k.endswith("downsample.0.weight") for k in state) else "A",
        "bias_downsample": any(k.endswith("downsample.0.bias") for k in state),
        "in_channels": int(stem.shape[1]), "num_classes": None if fc is None else int(fc.shape[0]),
    }


def imagenet_encoder(depth: int, *, in_channels: int = 3, output_stride: int = 32,
                     widths: tuple[int, ...] | None = None, **kwargs: Any) -> nn.Module:
    """The medzoo encoder that torchvision ResNet weights of ``depth`` fit: shortcut B, no downsample bias."""
    return create_encoder(f"resnet{depth}", in_channels=in_channels, output_stride=output_stride, widths=widths,
                          shortcut="B", bias_downsample=False, **kwargs)


def _check_encoder(arch: dict[str, Any], encoder: nn.Module, source: str) -> None:
    mine = encoder.architecture()
    theirs = {"depth": arch["depth"], "widths": list(arch["widths"]), "shortcut": arch["shortcut"],
              "bias_downsample": arch["bias_downsample"]}
    diffs = [k for k, v in theirs.items() if (list(mine[k]) if k == "widths" else mine[k]) != v]
    if diffs:
        raise ValueError(
            f"{source}: architecture mismatch ({', '.join(diffs)}): the file is a 2D ResNet-{arch['depth']} "
            f"(widths {theirs['widths']}, shortcut {arch['shortcut']}, downsample bias {arch['bias_downsample']}); "
            f"the encoder is {mine['encoder']} (widths {list(mine['widths'])}, shortcut {mine['shortcut']}, "
            f"downsample bias {mine['bias_downsample']}). Build it with "
            f"medzoo.zoo.imagenet.imagenet_encoder({arch['depth']}, in_channels=...).")


def load_resnet2d_state(encoder: nn.Module, state: dict[str, torch.Tensor], *, source: str, inflate: str = "centre",
                        head_prefix: str = "fc.", head_reason: str = "the ImageNet classifier (1000 classes); "
                        "medzoo task heads are separate", strict: bool = True) -> LoadReport:
    """Load a 2D torchvision-layout ResNet state dict into a medzoo ResNet encoder by inflation; returns the report.

    Keys under ``head_prefix`` are reported as ignored with ``head_reason``; the stem is adapted to the encoder's
    input channels; every inflated kernel is reported as adapted, and ``report.inflation`` names the mode.
    """
    arch = detect_resnet2d(state, source)
    _check_encoder(arch, encoder, source)
    if inflate not in INFLATE_MODES:
        raise ValueError(f"inflate must be one of {list(INFLATE_MODES)}, got {inflate!r}")
    own = encoder.state_dict()
    body, inflated = {}, []
    for key, value in state.items():
        if key.startswith(head_prefix):
            continue
        if value.dim() == 4 and key in own and own[key].dim() == 5:
            value = inflate_kernel(value, own[key].shape[2], inflate)
            inflated.append(key)
        body[key] = value
    report = load_state_with_report(encoder, body, source=source, strict=strict)
    why = f"2D kernel inflated to 3D ({inflate})"
    for key in inflated:
        if key in report.loaded:
            report.loaded.remove(key)
            report.adapted[key] = why
        elif key in report.adapted:
            report.adapted[key] = f"{report.adapted[key]}; {why}"
    report.ignored.update({k: head_reason for k in state if k.startswith(head_prefix)})
    report.inflation = inflate
    if encoder.output_stride != 32:
        report.adapted["<geometry>"] = (f"ImageNet ResNets run at output_stride 32; this encoder runs at "
                                        f"{encoder.output_stride} (layer3/4 dilated instead of strided)")
    return report


def _read_state(path_or_state: str | Path | dict) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(path_or_state, dict):
        return dict(path_or_state), "<state dict>"
    return strip_prefixes(unwrap_state_dict(read_weights(path_or_state), source=str(path_or_state))), str(path_or_state)


def load_imagenet(module: nn.Module, path_or_state: str | Path | dict, *, inflate: str = "centre",
                  strict: bool = True) -> LoadReport:
    """Load torchvision ImageNet ResNet weights into an encoder (or a model's ``.encoder``), inflated to 3D.

    Args:
        module: a medzoo ResNet encoder built with :func:`imagenet_encoder`, or a model holding one as ``.encoder``.
        path_or_state: a torchvision ``resnet*.pth`` (read with ``weights_only=True``) or its state dict.
        inflate: ``"centre"`` or ``"mean"`` (see the module docstring).
        strict: raise when the file lacks encoder parameters.

    Returns:
        The :class:`LoadReport` (also logged); keys are named as ``module`` names them.

    Example (not run here):
        >>> enc = imagenet_encoder(50, in_channels=1)  # doctest: +SKIP
        >>> load_imagenet(enc, "resnet50-0676ba61.pth").inflation  # doctest: +SKIP
        'centre'
    """
    state, source = _read_state(path_or_state)
    encoder = find_encoder(module)
    report = load_resnet2d_state(encoder, state, source=source, inflate=inflate, strict=strict)
    if encoder is not module:
        report.loaded = [f"encoder.{k}" for k in report.loaded]
        report.missing = [f"encoder.{k}" for k in report.missing]
        report.adapted = {k if k.startswith("<") else f"encoder.{k}": v for k, v in report.adapted.items()}
    return report.log()


def from_imagenet(path_or_state: str | Path | dict, *, inflate: str = "centre", in_channels: int = 3,
                  output_stride: int = 32) -> Any:
    """An encoder-only :class:`~medzoo.models.MultiTaskModel` holding inflated ImageNet weights.

    Depth and widths come from the file; ``model.load_report`` holds the report.
    """
    state, source = _read_state(path_or_state)
    arch = detect_resnet2d(state, source)
    encoder = imagenet_encoder(arch["depth"], in_channels=in_channels, output_stride=output_stride,
                               widths=tuple(arch["widths"]))
    model = MultiTaskModel(encoder, {})
    model.load_report = load_imagenet(model, state, inflate=inflate)
    model.load_report.source = source
    return model


def imagenet_preprocessing(in_channels: int = 3) -> dict[str, Any]:
    """The input contract of ImageNet weights for a grey image, as a ``preprocessing`` mapping.

    With 3 input channels the grey image is replicated to RGB and normalised per channel with ImageNet's mean and
    std: exactly the 2D network's contract. With 1 channel the stem is the RGB sum, which equals the 3-channel network
    on an input whose three normalised channels are equal; ImageNet's per-channel statistics differ slightly, so the
    grey image is normalised with their channel averages (mean 0.449, std 0.226), an approximation.
    """
    return imagenet_contract(in_channels).to_dict()
