"""Import of MedicalNet (Tencent, Med3D) checkpoints, exactly.

MedicalNet's ResNets are MONAI's ResNet with a stride-2 stem and layer3/4 dilated 2/4 instead of strided
(``output_stride=8`` here), plus an optional segmentation head ``conv_seg``. Released backbone files and the
checkpoints written by MedicalNet's ``train.py`` (``{'state_dict': {'module.' + key: ...}, 'ecpoch': ..., ...}``) are
both accepted. The architecture (depth, block, shortcut, widths, input channels) is read from the keys.

Example:
    >>> from medzoo.zoo.medicalnet import detect_architecture
    >>> from medzoo.encoders import create_encoder
    >>> sd = create_encoder("resnet18", widths=(8, 16, 32, 64)).state_dict()
    >>> arch = detect_architecture(sd)
    >>> arch["depth"], arch["shortcut"], arch["widths"]
    (18, 'A', [8, 16, 32, 64])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from medzoo.data.presets import medicalnet_contract
from medzoo.encoders import RESNET_SPECS, ResNetEncoder, create_encoder
from medzoo.heads.medicalnet import MedicalNetSegHead
from medzoo.models.multitask import MultiTaskModel
from medzoo.zoo.report import LoadReport
from medzoo.zoo.state import load_state_with_report, read_weights, strip_prefixes, unwrap_state_dict

__all__ = ["read_medicalnet", "detect_architecture", "load_medicalnet", "from_medicalnet", "find_encoder"]

SEG_PREFIX = "conv_seg."
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")
_ARCH_FIELDS = ("depth", "block", "shortcut", "widths")


def read_medicalnet(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a MedicalNet file safely and return its state dict without ``module.`` prefixes."""
    return strip_prefixes(unwrap_state_dict(read_weights(path), source=str(path)))


def block_layout(state: dict[str, torch.Tensor]) -> tuple[str, list[int]]:
    """Block type (``basic``/``bottleneck``) and blocks per stage of a ResNet state dict (2D or 3D), from its keys."""
    counts = [0, 0, 0, 0]
    for key in state:
        m = _BLOCK_KEY.match(key)
        if m:
            counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)) + 1)
    return ("bottleneck" if "layer1.0.conv3.weight" in state else "basic"), counts


def detect_architecture(state: dict[str, torch.Tensor], source: str = "<state dict>") -> dict[str, Any]:
    """Read depth, block type, blocks per stage, widths, shortcut, input channels and seg classes from the keys.

    Raises:
        ValueError: the keys are not those of a MedicalNet / MONAI ResNet of a known depth.
    """
    if "conv1.weight" not in state:
        sample = ", ".join(sorted(state)[:4])
        raise ValueError(f"{source}: not a MedicalNet/MONAI ResNet checkpoint: no 'conv1.weight' (keys: {sample}, ...)")
    block, counts = block_layout(state)
    depths = [d for d, spec in RESNET_SPECS.items() if spec[0] == block and spec[1] == tuple(counts)]
    if not depths:
        raise ValueError(f"{source}: {block} blocks per stage {counts} match no ResNet depth "
                         f"(known: { {d: list(s[1]) for d, s in RESNET_SPECS.items()} })")
    for key in ["conv1.weight", *(f"layer{i}.0.conv1.weight" for i in range(1, 5))]:
        if key not in state or state[key].dim() != 5:
            found = tuple(state[key].shape) if key in state else "nothing"
            raise ValueError(f"{source}: {key!r} must be a 3-D convolution weight [out, in, kD, kH, kW]; "
                             f"found {found}")
    widths = [int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5)]
    has_b = any(k.endswith("downsample.0.weight") for k in state)
    seg = state.get(SEG_PREFIX + "6.weight")
    return {
        "depth": depths[0], "block": block, "layers": counts, "widths": widths, "shortcut": "B" if has_b else "A",
        "bias_downsample": any(k.endswith("downsample.0.bias") for k in state),
        "in_channels": int(state["conv1.weight"].shape[1]),
        "num_seg_classes": None if seg is None else int(seg.shape[0]),
    }


def find_encoder(module: nn.Module) -> ResNetEncoder:
    """The ResNet encoder of ``module``: the module itself, or its ``encoder`` attribute."""
    enc = module if isinstance(module, ResNetEncoder) else getattr(module, "encoder", None)
    if not isinstance(enc, ResNetEncoder):
        raise TypeError(f"expected a medzoo ResNet encoder or a model with one as .encoder, "
                        f"got {type(module).__name__}")
    return enc


def _describe(arch: dict[str, Any]) -> str:
    return (f"resnet{arch['depth']} ({arch['block']} blocks {list(arch['layers'])}, shortcut {arch['shortcut']}, "
            f"widths {list(arch['widths'])})")


def _check_architecture(file_arch: dict[str, Any], encoder: ResNetEncoder, source: str) -> None:
    enc_arch = encoder.architecture()
    diffs = [f for f in _ARCH_FIELDS if list(_listify(file_arch[f])) != list(_listify(enc_arch[f]))]
    if diffs:
        raise ValueError(f"{source}: architecture mismatch ({', '.join(diffs)}): the file holds "
                         f"{_describe(file_arch)}, the encoder is {_describe(enc_arch)}")


def _listify(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _seg_heads(module: nn.Module) -> list[str]:
    heads = getattr(module, "heads", None)
    if heads is None:
        return []

    return [name for name, head in heads.items() if isinstance(head, MedicalNetSegHead)]


def load_medicalnet(module: nn.Module, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Load a MedicalNet checkpoint into an encoder, or into a model that has one (and a ``medicalnet_seg`` head).

    The encoder's depth, block, shortcut and widths must match the file (an error names both). Input channels are
    adapted; a different ``output_stride`` is a geometry change, loaded and reported. ``conv_seg.*`` goes into the
    model's ``medicalnet_seg`` head when it has one, and is otherwise ignored (reported).

    Args:
        module: a :class:`~medzoo.encoders.ResNetEncoder` or a model with ``.encoder`` (and optionally ``.heads``).
        path: a released ``resnet_*.pth``, a MedicalNet ``train.py`` checkpoint, or a safetensors file.
        strict: raise when the file lacks encoder parameters.

    Returns:
        A :class:`LoadReport` (also logged). Keys are reported as the model names them.
    """
    state = read_medicalnet(path)
    source = str(path)
    file_arch = detect_architecture(state, source)
    encoder = find_encoder(module)
    _check_architecture(file_arch, encoder, source)
    enc_state = {k: v for k, v in state.items() if not k.startswith(SEG_PREFIX)}
    report = load_state_with_report(encoder, enc_state, source=source, strict=strict)
    if encoder.output_stride != 8:
        report.adapted["<geometry>"] = f"MedicalNet trained at output_stride 8; encoder runs at {encoder.output_stride}"
    seg_state = {k[len(SEG_PREFIX):]: v for k, v in state.items() if k.startswith(SEG_PREFIX)}
    _load_seg(module, seg_state, source, report, strict)
    if encoder is not module:
        _prefix_report(report, "encoder.")
    return report.log()


def _load_seg(module: nn.Module, seg_state: dict, source: str, report: LoadReport, strict: bool) -> None:
    if not seg_state:
        return
    names = _seg_heads(module)
    if not names:
        report.ignored.update({SEG_PREFIX + k: "the model has no medicalnet_seg head" for k in seg_state})
        return
    head_report = load_state_with_report(module.heads[names[0]], seg_state, source=source, stem_key="", strict=strict)
    prefix = f"heads.{names[0]}."
    report.loaded += [prefix + k for k in head_report.loaded]
    report.missing += [prefix + k for k in head_report.missing]
    report.unexpected += [SEG_PREFIX + k for k in head_report.unexpected]


def _prefix_report(report: LoadReport, prefix: str) -> None:
    """Name encoder keys as the model does (``encoder.conv1.weight``)."""
    def fix(k: str) -> str:
        return k if k.startswith(("heads.", "<")) else prefix + k
    report.loaded = [fix(k) for k in report.loaded]
    report.missing = [fix(k) for k in report.missing]
    report.adapted = {fix(k): v for k, v in report.adapted.items()}


def from_medicalnet(path: str | Path, output_stride: int = 8, *, seg_task: str = "seg", **encoder_kwargs: Any):
    """Build the model a MedicalNet checkpoint needs and load it.

    Depth, block, shortcut, widths and input channels come from the file. A file with ``conv_seg.*`` also gets a
    MedicalNet segmentation head named ``seg_task``, whose ``model(x)[seg_task]`` equals MedicalNet's logits.

    Args:
        path: the checkpoint.
        output_stride: 8 is MedicalNet's geometry (required when the file has a segmentation head).
        seg_task: the task name of the segmentation head.
        **encoder_kwargs: extra :func:`medzoo.create_encoder` options (for example ``in_channels``).

    Returns:
        A :class:`medzoo.models.MultiTaskModel`, with the load report in ``model.load_report`` and MedicalNet's input
        contract (:func:`~medzoo.data.presets.medicalnet_contract`) in ``model.preprocessing``.

    Example (not run here):
        >>> model = from_medicalnet("pretrain/resnet_10_23dataset.pth")  # doctest: +SKIP
        >>> feats = model.encoder(torch.zeros(1, 1, 56, 224, 224))  # doctest: +SKIP
    """
    state = read_medicalnet(path)
    arch = detect_architecture(state, str(path))
    if arch["num_seg_classes"] is not None and output_stride != 8:
        raise ValueError(f"{path}: holds a MedicalNet segmentation head (conv_seg), which only exists at "
                         f"output_stride 8; got output_stride={output_stride}")
    kwargs = {"in_channels": arch["in_channels"], "widths": tuple(arch["widths"]), "shortcut": arch["shortcut"],
              "bias_downsample": arch["bias_downsample"], **encoder_kwargs}
    encoder = create_encoder(f"resnet{arch['depth']}", output_stride=output_stride, **kwargs)
    heads = {}
    if arch["num_seg_classes"] is not None:
        heads[seg_task] = MedicalNetSegHead(encoder.feature_dim, arch["num_seg_classes"])
    model = MultiTaskModel(encoder, heads)
    model.load_report = load_medicalnet(model, path)
    model.preprocessing = {"volume": medicalnet_contract()}  # the data MedicalNet's weights were trained on
    return model
