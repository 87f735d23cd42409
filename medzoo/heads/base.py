"""The head contract, the ``HEADS`` registry and ``create_head``.

A head turns encoder output into **logits** for one task. Activations (softmax, sigmoid, thresholds, upsampling of
low-resolution logits) live only in :meth:`Head.activate`, which ``MultiTaskModel.predict`` calls.

Two kinds of heads exist:

- ``dense`` heads read the encoder's feature list ``[stem, layer1, layer2, layer3, layer4]`` and the spatial size of
  the input, and return a map of logits ``[B, K, *spatial]`` (segmentation).
- ``vector`` heads read one pooled feature ``[..., F]`` (``[B, F]`` for a volume or an image or an aggregated series,
  ``[B, N, F]`` for per-slice predictions) and return ``[..., K]``.

Each head class declares its ``kind`` and the task ``levels`` it supports, and builds itself from a
:class:`FeatureInfo` (what the encoder and aggregator provide) plus the task's own arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from medzoo.registry import Registry

__all__ = [
    "HEADS",
    "LEVELS",
    "FeatureInfo",
    "Head",
    "HeadArgumentError",
    "create_head",
    "default_label_names",
    "dense_activate",
    "list_heads",
]

HEADS = Registry("head type")

#: Task levels: ``volume`` [B, C, D, H, W], ``image`` [B, C, H, W], ``slice`` (one prediction per item of a series,
#: [B, N, K]) and ``series`` (one prediction per aggregated series, [B, K]).
LEVELS = ("volume", "image", "slice", "series")


@dataclass(frozen=True)
class FeatureInfo:
    """What a head is built on.

    Attributes:
        channels: channels of the five encoder maps (the encoder's ``out_channels``).
        reductions: per-axis stride of each encoder map relative to the input (the encoder's ``reductions``).
        output_stride: the encoder's output stride (8, 16 or 32).
        in_features: size of the pooled vector that vector heads read (encoder feature size, or the aggregator's
            ``out_features`` for series-level tasks).
        spatial_dims: 3 for volumes (and slabs), 2 for images (and slices).
    """

    channels: tuple[int, ...]
    reductions: tuple[tuple[int, ...], ...]
    output_stride: int
    in_features: int
    spatial_dims: int = 3


class HeadArgumentError(ValueError):
    """A head argument is missing or invalid; ``arg`` names it (``create_model`` reports ``tasks.<task>.<arg>``)."""

    def __init__(self, arg: str, message: str) -> None:
        super().__init__(message)
        self.arg = arg


def default_label_names(n: int) -> tuple[str, ...]:
    """``("class_0", ..., "class_{n-1}")``."""
    return tuple(f"class_{i}" for i in range(n))


def _resolve_labels(num_classes: int | None, labels: Sequence[str] | None, what: str) -> tuple[str, ...]:
    """Check ``num_classes`` against ``labels`` and return the label names."""
    if labels is not None:
        labels = tuple(str(lab) for lab in labels)
        if len(set(labels)) != len(labels):
            raise HeadArgumentError("labels", f"{what}: labels must be unique, got {list(labels)}")
        if num_classes is not None and num_classes != len(labels):
            raise HeadArgumentError("num_classes", f"{what}: num_classes={num_classes} but {len(labels)} labels")
        if not labels:
            raise HeadArgumentError("labels", f"{what}: labels must not be empty")
        return labels
    if num_classes is None:
        raise HeadArgumentError("num_classes", f"{what}: num_classes is required")
    if int(num_classes) < 1:
        raise HeadArgumentError("num_classes", f"{what}: num_classes must be >= 1, got {num_classes}")
    return default_label_names(int(num_classes))


class Head(nn.Module):
    """Base of every task head.

    Attributes:
        kind: ``"dense"`` or ``"vector"``.
        levels: the task levels this head can serve.
        label_names: one name per output channel.
    """

    kind: ClassVar[str] = "vector"
    levels: ClassVar[tuple[str, ...]] = LEVELS
    label_names: tuple[str, ...]

    @classmethod
    def from_features(cls, info: FeatureInfo, **kwargs: Any) -> Head:
        """Build the head on what the encoder provides; vector heads read ``info.in_features``."""
        return cls(info.in_features, **kwargs)

    @property
    def num_outputs(self) -> int:
        """Number of output channels (``len(label_names)``)."""
        return len(self.label_names)

    def activate(self, logits: Tensor, input_size: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Turn logits into predictions (probabilities, classes, values); overridden by every head."""
        raise NotImplementedError


def create_head(type_name: str, info: FeatureInfo, **kwargs: Any) -> Head:
    """Build a registered head type on ``info`` with the task's arguments.

    Args:
        type_name: a name from :func:`list_heads` (``segmentation``, ``medicalnet_seg``, ``classification``,
            ``multilabel``, ``regression``).
        info: what the encoder (and aggregator) provide.
        **kwargs: the head's own arguments (``num_classes``, ``labels``, ``outputs``, ...).

    Example:
        >>> from medzoo.heads import FeatureInfo, create_head
        >>> reductions = ((2,) * 3, (4,) * 3, (8,) * 3, (16,) * 3, (32,) * 3)
        >>> info = FeatureInfo((8, 8, 16, 32, 64), reductions, output_stride=32, in_features=64)
        >>> create_head("classification", info, num_classes=3).label_names
        ('class_0', 'class_1', 'class_2')
    """
    return HEADS.get(type_name).from_features(info, **kwargs)


def list_heads() -> list[str]:
    """Sorted names of the registered head types."""
    return HEADS.list()


def dense_activate(
    logits: Tensor, input_size: Sequence[int] | None = None, threshold: float = 0.5
) -> dict[str, Tensor]:
    """Activate segmentation logits ``[B, K, *spatial]``.

    Logits smaller than ``input_size`` are first resized to it (linear interpolation of the logits). ``K == 1`` is
    a binary map (sigmoid, ``pred = prob >= threshold``); ``K > 1`` is a softmax over classes with ``pred = argmax``.

    Returns:
        ``{"probs": [B, K, *input_size], "pred": [B, *input_size] (long)}``.
    """
    if input_size is not None and tuple(logits.shape[2:]) != tuple(input_size):
        mode = "trilinear" if logits.dim() == 5 else "bilinear"
        logits = nn.functional.interpolate(logits, size=tuple(input_size), mode=mode, align_corners=False)
    if logits.shape[1] == 1:
        probs = logits.sigmoid()
        return {"probs": probs, "pred": (probs[:, 0] >= threshold).long()}
    probs = logits.softmax(dim=1)
    return {"probs": probs, "pred": probs.argmax(dim=1)}
