"""Segmentation overlap per sample and class: Dice and IoU on label maps or one-hot masks.

They work on torch tensors (they run on model outputs, possibly on the GPU). A class absent from the target is NaN
by default (average with ``nanmean``), never a made-up number.

Example:
    >>> dice_per_class(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1]]), num_classes=2)
    tensor([[0.6667, 0.8000]], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dice_per_class", "iou_per_class"]

def _overlaps(pred: Tensor, target: Tensor, num_classes: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample and class: |P ∩ T|, |P|, |T| as float64 ``[B, C]``."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if num_classes is not None:
        if pred.shape != target.shape:
            raise ValueError(f"label maps must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        for name, lab in (("pred", pred), ("target", target)):
            if bool(((lab < 0) | (lab >= num_classes)).any()):
                raise ValueError(f"{name} labels must lie in [0, {num_classes}), got values in "
                                 f"[{int(lab.min())}, {int(lab.max())}]")
        pred = torch.nn.functional.one_hot(pred.long(), num_classes).movedim(-1, 1)
        target = torch.nn.functional.one_hot(target.long(), num_classes).movedim(-1, 1)
    elif pred.shape != target.shape or pred.ndim < 3 or any(bool(((x != 0) & (x != 1)).any()) for x in (pred, target)):
        raise ValueError(f"one-hot inputs must both be 0/1 [B, C, *S], got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)} (pass num_classes for label maps)")
    pred, target = pred.bool(), target.bool()
    dims = tuple(range(2, pred.ndim))
    inter = (pred & target).sum(dims).double()
    return inter, pred.sum(dims).double(), target.sum(dims).double()


def _finish(score: Tensor, n_pred: Tensor, n_true: Tensor, include_background: bool, ignore_empty: bool) -> Tensor:
    empty_true = n_true == 0
    if ignore_empty:
        score = torch.where(empty_true, torch.full_like(score, float("nan")), score)
    else:  # both empty -> perfect agreement; only the prediction non-empty -> 0 (already)
        score = torch.where(empty_true & (n_pred == 0), torch.ones_like(score), score)
    return score if include_background else score[:, 1:]


def dice_per_class(pred: Tensor, target: Tensor, num_classes: int | None = None, include_background: bool = True,
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
    inter, n_pred, n_true = _overlaps(pred, target, num_classes)
    score = 2 * inter / (n_pred + n_true).clamp_min(1)
    return _finish(score, n_pred, n_true, include_background, ignore_empty)


def iou_per_class(pred: Tensor, target: Tensor, num_classes: int | None = None, include_background: bool = True,
                  ignore_empty: bool = True) -> Tensor:
    """IoU (Jaccard) ``|P∩T| / |P∪T|`` per sample and class; arguments as :func:`dice_per_class`.

    Example:
        >>> iou_per_class(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1]]), num_classes=2)
        tensor([[0.5000, 0.6667]], dtype=torch.float64)
    """
    inter, n_pred, n_true = _overlaps(pred, target, num_classes)
    score = inter / (n_pred + n_true - inter).clamp_min(1)
    return _finish(score, n_pred, n_true, include_background, ignore_empty)
