"""Segmentation losses: cross-entropy and the V-Net soft Dice on label maps, with MedicalNet's label downsampling.

The Dice arithmetic is MONAI's (:class:`monai.losses.MaskedDiceLoss`, the masked form of ``DiceLoss``); what is ours
is the target side: label maps ``[B, *S]`` (or ``[B, 1, *S]``) checked and one-hot encoded, voxels at
``ignore_index`` masked out of both sums, and MedicalNet's nearest label downsampling. Where the logits are at a lower
resolution than the labels (``medicalnet_seg``, which keeps MedicalNet's input/4 output), ``match_size=True``
nearest-downsamples the labels to the logits' size with :func:`downsample_labels`, as MedicalNet does with
``scipy.ndimage.zoom(order=0)``. Registered in ``LOSSES`` as ``seg_ce``, ``dice`` and ``dice_ce``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from torch import Tensor, nn

from medzoo.train._loss_base import LOSSES, WeightLike, _as_weight, _buffer, _check_reduction, _class_index, _reduce

__all__ = ["DiceCELoss", "DiceLoss", "SegCELoss", "dice_loss", "downsample_labels", "seg_ce"]

# ------------------------------------------------------------------------------------------------- segmentation
def _zoom_index(n_in: int, n_out: int, device: torch.device) -> Tensor:
    if n_out == 1:
        return torch.zeros(1, dtype=torch.long, device=device)
    coords = torch.arange(n_out, dtype=torch.float64, device=device) * ((n_in - 1) / (n_out - 1))
    return torch.floor(coords + 0.5).long().clamp_(0, n_in - 1)


def downsample_labels(labels: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of a label map, with ``scipy.ndimage.zoom(order=0)`` semantics.

    Output index ``o`` on an axis of input length ``n`` and output length ``m`` takes input index
    ``floor(o * (n - 1) / (m - 1) + 0.5)`` (corners aligned, halves rounded up), as MedicalNet's label resizing.
    The index is clamped to ``n - 1``: where float round-off lands just past the last voxel, scipy's default
    ``mode="constant"`` returns 0 instead (for example 31 -> 30); this equals scipy with ``mode="nearest"``.

    Args:
        labels: ``[..., *S]``; the last ``len(size)`` axes are resized, any dtype (values are copied, never mixed).
        size: the target spatial size.

    Returns:
        ``[..., *size]`` with the dtype of ``labels``.

    Example:
        >>> downsample_labels(torch.arange(4)[None], (3,))
        tensor([[0, 2, 3]])
    """
    size = tuple(int(s) for s in size)
    if labels.ndim < len(size) or any(s < 1 for s in size):
        raise ValueError(f"downsample_labels: cannot resize labels {tuple(labels.shape)} to {size}")
    first = labels.ndim - len(size)
    out = labels
    for axis, n_out in enumerate(size):
        n_in = labels.shape[first + axis]
        if n_in != n_out:
            out = out.index_select(first + axis, _zoom_index(n_in, n_out, labels.device))
    return out


def _label_map(logits: Tensor, labels: Tensor, match_size: bool, name: str) -> Tensor:
    """``[B, *S]`` or ``[B, 1, *S]`` labels -> ``[B, *s]`` (s = logits' spatial size), resized if allowed."""
    spatial = tuple(logits.shape[2:])
    if labels.ndim == logits.ndim and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != logits.ndim - 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{name}: labels must be [B, *S] or [B, 1, *S] for logits {tuple(logits.shape)}, "
                         f"got {tuple(labels.shape)}")
    if tuple(labels.shape[1:]) != spatial:
        if not match_size:
            raise ValueError(f"{name}: labels {tuple(labels.shape[1:])} and logits {spatial} differ in size; pass "
                             "match_size=True to nearest-downsample the labels (medicalnet_seg)")
        labels = downsample_labels(labels, spatial)
    return labels


def seg_ce(logits: Tensor, labels: Tensor, class_weight: WeightLike = None, ignore_index: int = -1,
           match_size: bool = False, reduction: str = "mean") -> Tensor:
    """Voxel-wise cross-entropy for segmentation (MedicalNet's ``CrossEntropyLoss(ignore_index=-1)``).

    Args:
        logits: ``[B, K, *s]``.
        labels: ``[B, *S]`` or ``[B, 1, *S]`` class indices; ``ignore_index`` voxels are skipped.
        class_weight: ``[K]`` or None (weighted mean, as PyTorch).
        ignore_index: label value to skip.
        match_size: nearest-downsample labels to ``s`` when ``S != s`` (otherwise a size mismatch is an error).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B, *s]``).

    Example:
        >>> seg_ce(torch.zeros(1, 2, 2, 2, 2), torch.ones(1, 4, 4, 4, dtype=torch.long), match_size=True)
        tensor(0.6931)
    """
    lab = _label_map(logits, labels, match_size, "seg_ce")
    valid = lab != ignore_index
    idx = _class_index(lab.to(torch.float64), torch.ones_like(valid), logits.shape[1], "seg_ce", ignore_index)
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    cw = _as_weight(class_weight, logits.shape[1], "class_weight")
    weight = None if cw is None else cw.to(logits)[idx]
    elem = F.cross_entropy(logits, idx, reduction="none")
    return _reduce(elem, valid, _check_reduction(reduction), weight)


def _dice_target(logits: Tensor, target: Tensor, sigmoid: bool, ignore_index: int | None,
                 match_size: bool) -> tuple[Tensor, Tensor]:
    """Return a one-hot (or multi-label) target ``[B, C, *s]`` and a voxel validity mask ``[B, 1, *s]``."""
    num_classes = logits.shape[1]
    if target.shape == logits.shape and num_classes > 1 and target.is_floating_point():
        onehot = target.to(logits.dtype)  # already one-hot / multi-label; ignore_index does not apply
        return onehot, torch.ones_like(onehot[:, :1], dtype=torch.bool)
    if sigmoid and num_classes > 1:
        raise ValueError(f"dice: sigmoid mode needs targets shaped like the logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    lab = _label_map(logits, target, match_size, "dice")
    valid = (lab != ignore_index) if ignore_index is not None else torch.ones_like(lab, dtype=torch.bool)
    n_idx = 2 if sigmoid else num_classes
    idx = _class_index(lab.to(torch.float64), torch.ones_like(valid), n_idx, "dice", ignore_index)
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    onehot = idx[:, None].to(logits.dtype) if sigmoid else F.one_hot(idx, num_classes).movedim(-1, 1).to(logits.dtype)
    return onehot, valid[:, None]


def dice_loss(logits: Tensor, target: Tensor, *, sigmoid: bool = False, squared: bool = True, smooth: float = 1e-5,
              include_background: bool = True, batch: bool = False, ignore_index: int | None = None,
              match_size: bool = False) -> Tensor:
    """Soft Dice loss ``1 - (2 sum(AB) + eps) / (sum(A^2) + sum(B^2) + eps)``, per class, then the mean.

    ``A`` are the softmax (or sigmoid) probabilities and ``B`` the one-hot targets (Milletari et al. 2016). The
    arithmetic is :class:`monai.losses.MaskedDiceLoss` (``squared_pred``, ``smooth_nr = smooth_dr = eps``); the mask
    drops ``ignore_index`` voxels from both sums.

    Args:
        logits: ``[B, C, *s]``.
        target: a label map ``[B, *S]`` / ``[B, 1, *S]``, or a float one-hot/multi-label ``[B, C, *s]``.
        sigmoid: independent sigmoid channels instead of a softmax over classes.
        squared: squared sums in the denominator (V-Net's form); False uses ``sum(A) + sum(B)``.
        smooth: ``eps`` added to numerator and denominator.
        include_background: keep channel 0 in the mean.
        batch: sum over the batch before the ratio (one Dice per class) instead of one per sample and class.
        ignore_index: label value whose voxels are left out of both sums.
        match_size: nearest-downsample label maps to the logits' size.

    Example:
        >>> dice_loss(torch.tensor([[[-9.0, 9.0]], [[9.0, -9.0]]]).permute(1, 0, 2), torch.tensor([[1, 0]]))
        tensor(0.)
    """
    if not sigmoid and logits.shape[1] < 2:
        raise ValueError(f"dice: logits {tuple(logits.shape)} have one channel; a softmax over one channel is "
                         "constant, so pass sigmoid=True")
    if not include_background and logits.shape[1] < 2:
        raise ValueError("dice: include_background=False needs at least 2 channels")
    onehot, valid = _dice_target(logits, target, sigmoid, ignore_index, match_size)
    loss = MaskedDiceLoss(include_background=include_background, sigmoid=sigmoid, softmax=not sigmoid,
                          squared_pred=squared, smooth_nr=smooth, smooth_dr=smooth, batch=batch)
    return loss(logits, onehot, mask=valid.to(logits.dtype))


@LOSSES.register("seg_ce")
class SegCELoss(nn.Module):
    """Module form of :func:`seg_ce`."""

    def __init__(self, class_weight: WeightLike = None, ignore_index: int = -1, match_size: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index, self.match_size, self.reduction = ignore_index, match_size, _check_reduction(reduction)
        _buffer(self, "class_weight", class_weight)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return seg_ce(logits, labels, self.class_weight, self.ignore_index, self.match_size, self.reduction)


@LOSSES.register("dice")
class DiceLoss(nn.Module):
    """Module form of :func:`dice_loss`; keyword arguments are passed through."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.kwargs = kwargs

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(logits, target, **self.kwargs)  # type: ignore[arg-type]


@LOSSES.register("dice_ce")
class DiceCELoss(nn.Module):
    """``dice_weight * dice_loss + ce_weight * CE`` (voxel CE for softmax, channel-wise BCE for ``sigmoid=True``).

    Without class weights and ignored voxels it equals ``monai.losses.DiceCELoss(softmax=True, to_onehot_y=True,
    squared_pred=True)``; it is not built on that class because MONAI's has no ``ignore_index`` (MedicalNet's -1
    labels) and applies the CE class weights to the Dice term too.

    Args:
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
        class_weight: ``[C]`` CE class weights (softmax mode only).
        ignore_index: label value skipped by both terms (-1, MedicalNet's).
        match_size: nearest-downsample label maps to the logits' size.
        **dice_kwargs: further :func:`dice_loss` options (``squared``, ``smooth``, ``include_background``, ...).
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, class_weight: WeightLike = None,
                 ignore_index: int = -1, match_size: bool = False, sigmoid: bool = False,
                 **dice_kwargs: object) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight, self.sigmoid = float(dice_weight), float(ce_weight), sigmoid
        self.ignore_index, self.match_size, self.dice_kwargs = ignore_index, match_size, dice_kwargs
        _buffer(self, "class_weight", class_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        dice = dice_loss(logits, target, sigmoid=self.sigmoid, ignore_index=self.ignore_index,
                         match_size=self.match_size, **self.dice_kwargs)  # type: ignore[arg-type]
        if self.sigmoid:
            onehot, valid = _dice_target(logits, target, True, self.ignore_index, self.match_size)
            ce = _reduce(F.binary_cross_entropy_with_logits(logits, onehot, reduction="none"),
                         valid.expand_as(onehot), "mean")
        else:
            ce = seg_ce(logits, target, self.class_weight, self.ignore_index, self.match_size)
        return self.dice_weight * dice + self.ce_weight * ce
