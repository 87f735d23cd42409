"""Segmentation overlap per sample and class: Dice and IoU on label maps or one-hot masks.

The ratios are MONAI's (:func:`monai.metrics.compute_dice`, :func:`monai.metrics.compute_iou`); what is ours is the
input side: label maps or 0/1 masks checked and one-hot encoded in float64, so the counts are exact. They work on
torch tensors (they run on model outputs, possibly on the GPU) and take numpy arrays too. A class absent from the
target is NaN by default (average with ``nanmean``), never a made-up number. The localisation metrics
(:mod:`medzoo.metrics.localization`) use the same two functions on binary maps.

Example:
    >>> dice_per_class(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1]]), num_classes=2)
    tensor([[0.6667, 0.8000]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import compute_dice, compute_iou
from torch import Tensor

__all__ = ["dice_per_class", "iou_per_class"]


def _one_hot_pair(pred: Any, target: Any, num_classes: int | None) -> tuple[Tensor, Tensor]:
    """Both inputs as float64 one-hot ``[B, C, *S]`` after checking their form."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if num_classes is not None:
        if pred.shape != target.shape:
            raise ValueError(f"label maps must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        for name, lab in (("pred", pred), ("target", target)):
            if bool(((lab < 0) | (lab >= num_classes)).any()):
                raise ValueError(f"{name} labels must lie in [0, {num_classes}), got values in "
                                 f"[{int(lab.min())}, {int(lab.max())}]")
        return tuple(torch.nn.functional.one_hot(lab.long(), num_classes).movedim(-1, 1).double()  # type: ignore
                     for lab in (pred, target))
    if pred.shape != target.shape or pred.ndim < 3 or any(bool(((x != 0) & (x != 1)).any()) for x in (pred, target)):
        raise ValueError(f"one-hot inputs must both be 0/1 [B, C, *S], got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)} (pass num_classes for label maps)")
    return pred.double(), target.double()


def dice_per_class(pred: Any, target: Any, num_classes: int | None = None, include_background: bool = True,
                   ignore_empty: bool = True) -> Tensor:
    """Dice ``2|P∩T| / (|P| + |T|)`` per sample and class.

    Args:
        pred: label map ``[B, *S]`` (with ``num_classes``) or binary one-hot ``[B, C, *S]`` (without); a tensor
            or an array.
        target: same form as ``pred``.
        num_classes: the number of classes of label maps; None means the inputs are one-hot.
        include_background: keep class 0.
        ignore_empty: NaN where the class is absent from the target (then average with ``nanmean``); otherwise
            1 when both are empty and 0 when only the target is.

    Returns:
        float64 ``[B, C]`` (``C - 1`` without background).

    Example:
        >>> dice_per_class(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1]]), num_classes=2)
        tensor([[0.6667, 0.8000]], dtype=torch.float64)
    """
    p, t = _one_hot_pair(pred, target, num_classes)
    if p.shape[1] == 1:  # MONAI reads one channel as a class-1 label map, counted in float32: add the complement
        score = compute_dice(torch.cat([p, 1 - p], 1), torch.cat([t, 1 - t], 1), ignore_empty=ignore_empty)[:, :1]
    else:
        score = compute_dice(p, t, include_background=True, ignore_empty=ignore_empty)
    return score.double() if include_background else score[:, 1:].double()


def iou_per_class(pred: Any, target: Any, num_classes: int | None = None, include_background: bool = True,
                  ignore_empty: bool = True) -> Tensor:
    """IoU (Jaccard) ``|P∩T| / |P∪T|`` per sample and class; arguments as :func:`dice_per_class`.

    Example:
        >>> iou_per_class(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1]]), num_classes=2)
        tensor([[0.5000, 0.6667]], dtype=torch.float64)
    """
    p, t = _one_hot_pair(pred, target, num_classes)
    score = compute_iou(p, t, include_background=True, ignore_empty=ignore_empty).double()
    return score if include_background else score[:, 1:]
