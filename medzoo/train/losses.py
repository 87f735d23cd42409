"""Losses for every medzoo task. All of them take raw logits; none expects probabilities.

Missing labels are NaN (datasets label different subsets; NaN keeps "unknown" apart from 0): the vector losses
(``masked_bce``, ``masked_ce``, focal, MSE, Huber) drop NaN entries before anything else, then cast class targets to
``long``. A batch with no valid label gives a zero loss that still has a ``grad_fn``, so per-task losses can always be
summed and back-propagated.

Reductions: ``"mean"`` averages over the valid entries (weighted by class weights where given, as PyTorch does);
``"sum"`` adds them up; ``"none"`` returns the per-entry losses with zeros at the missing entries. For DDP (ranks hold
different numbers of valid labels), use ``reduction="sum"`` and divide by the global :func:`count_valid` (all-reduced
over ranks).

Segmentation losses take label maps ``[B, *S]`` (or ``[B, 1, *S]``). Where the logits are at a lower resolution than the
labels (``medicalnet_seg``, which keeps MedicalNet's input/4 output), ``match_size=True`` nearest-downsamples the labels
to the logits' size with :func:`downsample_labels`, as MedicalNet does with ``scipy.ndimage.zoom(order=0)``.

Example:
    >>> import torch
    >>> from medzoo.train.losses import LOSSES
    >>> loss_fn = LOSSES.get("bce")()
    >>> loss_fn(torch.zeros(2, 3), torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, float("nan")]]))
    tensor(0.6931)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medzoo.train._loss_base import (
    LOSSES,
    WeightLike,
    _as_weight,
    _binary_targets,
    _buffer,
    _check_reduction,
    _class_index,
    _masked_float_targets,
    _reduce,
    _valid_mask,
)

__all__ = [
    "LOSSES",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "MaskedBCELoss",
    "MaskedCELoss",
    "MaskedHuberLoss",
    "MaskedMSELoss",
    "SegCELoss",
    "count_valid",
    "dice_loss",
    "downsample_labels",
    "focal_bce",
    "focal_ce",
    "masked_bce",
    "masked_ce",
    "masked_huber",
    "masked_mse",
    "seg_ce",
]



def count_valid(targets: Tensor, class_weight: WeightLike = None, ignore_index: int | None = None) -> Tensor:
    """Number of labelled entries, the normaliser of ``reduction="sum"`` losses.

    Under DDP, all-reduce this count over ranks and use ``loss_sum / global_count * world_size`` per rank (DDP
    averages gradients over ranks), so that the result equals a single process on the whole batch.

    Args:
        targets: any shape; NaN entries (float) and ``ignore_index`` entries are not counted.
        class_weight: ``[K]``; when given, ``targets`` are class indices and the count is the sum of their weights
            (the denominator of a class-weighted mean, as in :func:`masked_ce`).
        ignore_index: a label value that is not counted (segmentation).

    Returns:
        A float32 scalar tensor.

    Example:
        >>> count_valid(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
        tensor(3.)
    """
    valid = _valid_mask(targets)
    if ignore_index is not None:
        valid &= targets != ignore_index
    if class_weight is None:
        return valid.sum().to(torch.float32)
    w = torch.as_tensor(class_weight, dtype=torch.float32, device=targets.device)
    idx = _class_index(targets, valid, w.numel(), "count_valid", ignore_index)
    return torch.where(valid, w[idx.clamp(0, w.numel() - 1)], 0.0).sum()


# ----------------------------------------------------------------------------------------- vector (masked) losses
def masked_bce(logits: Tensor, targets: Tensor, pos_weight: WeightLike = None, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy over the labelled entries of a multi-label batch.

    Args:
        logits: ``[B, L]``.
        targets: ``[B, L]`` in [0, 1], NaN = unknown (never enters the loss).
        pos_weight: ``[L]`` weight of the positive term per label, or None.
        reduction: ``"mean"`` over valid entries, ``"sum"``, or ``"none"`` (``[B, L]``, zeros at NaN).

    Returns:
        A scalar (or ``[B, L]``). An all-NaN batch gives 0 with a ``grad_fn`` (and zero gradients).

    Example:
        >>> masked_bce(torch.zeros(1, 2), torch.tensor([[1.0, float("nan")]]))
        tensor(0.6931)
    """
    valid, t = _binary_targets(logits, targets, "masked_bce")
    pw = _as_weight(pos_weight, logits.shape[-1], "pos_weight")
    pw = None if pw is None else pw.to(logits)
    elem = F.binary_cross_entropy_with_logits(logits, t, pos_weight=pw, reduction="none")
    return _reduce(elem, valid, _check_reduction(reduction))


def _ce_inputs(logits: Tensor, targets: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"{name}: expected logits [B, K] and targets [B], got {tuple(logits.shape)}, "
                         f"{tuple(targets.shape)}")
    valid = _valid_mask(targets)
    return valid, _class_index(targets, valid, logits.shape[1], name)


def masked_ce(logits: Tensor, targets: Tensor, class_weight: WeightLike = None, reduction: str = "mean") -> Tensor:
    """Cross-entropy over the samples that have a class label (mask first, then cast to long: NaN has no integer).

    Args:
        logits: ``[B, K]``.
        targets: ``[B]`` class indices as floats, NaN = missing (integer tensors are accepted too).
        class_weight: ``[K]`` or None. With weights, ``"mean"`` is the weighted mean ``sum(w_i l_i) / sum(w_i)``
            over valid samples, exactly as ``torch.nn.CrossEntropyLoss``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B]``, zeros at missing labels).

    Example:
        >>> masked_ce(torch.zeros(2, 3), torch.tensor([2.0, float("nan")]))
        tensor(1.0986)
    """
    valid, idx = _ce_inputs(logits, targets, "masked_ce")
    cw = _as_weight(class_weight, logits.shape[1], "class_weight")
    weight = None if cw is None else cw.to(logits)[idx]
    elem = F.cross_entropy(logits, idx, reduction="none")
    return _reduce(elem, valid, _check_reduction(reduction), weight)


def focal_bce(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: float | None = None,
              reduction: str = "mean") -> Tensor:
    """Binary focal loss (Lin et al. 2017) with the NaN mask: ``-alpha_t (1 - p_t)^gamma log(p_t)``.

    Args:
        logits: ``[B, L]`` (any shape equal to ``targets``).
        targets: in [0, 1], NaN = unknown.
        gamma: focusing parameter; 0 gives plain BCE.
        alpha: weight of positives (``1 - alpha`` for negatives), or None for no weighting. ``"mean"`` is the plain
            mean over valid entries (RetinaNet's normalisation by count).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> focal_bce(torch.zeros(1, 1), torch.ones(1, 1), gamma=2.0)
        tensor(0.1733)
    """
    valid, t = _binary_targets(logits, targets, "focal_bce")
    elem = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    if gamma != 0:
        p = torch.sigmoid(logits)
        elem = elem * (1 - (p * t + (1 - p) * (1 - t))) ** gamma
    if alpha is not None:
        elem = elem * (alpha * t + (1 - alpha) * (1 - t))
    return _reduce(elem, valid, _check_reduction(reduction))


def focal_ce(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: WeightLike = None,
             reduction: str = "mean") -> Tensor:
    """Multiclass focal loss ``-alpha[y] (1 - p_y)^gamma log(p_y)`` with the NaN mask.

    Args:
        logits: ``[B, K]``.
        targets: ``[B]`` class indices as floats, NaN = missing.
        gamma: focusing parameter; ``gamma=0`` equals :func:`masked_ce` with ``class_weight=alpha``.
        alpha: ``[K]`` class weights or None; ``"mean"`` is the weighted mean, as in :func:`masked_ce`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> focal_ce(torch.zeros(1, 2), torch.tensor([1.0]), gamma=0.0)
        tensor(0.6931)
    """
    valid, idx = _ce_inputs(logits, targets, "focal_ce")
    aw = _as_weight(alpha, logits.shape[1], "alpha")
    log_pt = F.log_softmax(logits, dim=1).gather(1, idx[:, None])[:, 0]
    elem = -log_pt if gamma == 0 else -((1 - log_pt.exp()) ** gamma) * log_pt
    return _reduce(elem, valid, _check_reduction(reduction), None if aw is None else aw.to(logits)[idx])


def masked_mse(preds: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error over non-NaN targets. ``preds`` and ``targets``: ``[B, L]`` (same shape).

    Example:
        >>> masked_mse(torch.tensor([[1.0, 5.0]]), torch.tensor([[3.0, float("nan")]]))
        tensor(4.)
    """
    valid, t = _masked_float_targets(preds, targets, "masked_mse")
    return _reduce((preds - t) ** 2, valid, _check_reduction(reduction))


def masked_huber(preds: Tensor, targets: Tensor, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Huber loss over non-NaN targets: ``0.5 e^2`` for ``|e| <= delta``, else ``delta (|e| - delta / 2)``.

    Example:
        >>> masked_huber(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, float("nan")]]))
        tensor(2.5000)
    """
    valid, t = _masked_float_targets(preds, targets, "masked_huber")
    elem = F.huber_loss(preds, t, delta=delta, reduction="none")
    return _reduce(elem, valid, _check_reduction(reduction))

# ------------------------------------------------------------------------------------------------------- modules


@LOSSES.register("bce")
class MaskedBCELoss(nn.Module):
    """Module form of :func:`masked_bce` (``pos_weight`` kept as a buffer, so ``.to(device)`` moves it)."""

    def __init__(self, pos_weight: WeightLike = None, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        _buffer(self, "pos_weight", pos_weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return masked_bce(logits, targets, self.pos_weight, self.reduction)


@LOSSES.register("ce")
class MaskedCELoss(nn.Module):
    """Module form of :func:`masked_ce`."""

    def __init__(self, class_weight: WeightLike = None, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        _buffer(self, "class_weight", class_weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return masked_ce(logits, targets, self.class_weight, self.reduction)


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Focal loss; ``mode="binary"`` uses :func:`focal_bce` (float ``alpha``), ``"multiclass"`` :func:`focal_ce`."""

    def __init__(self, mode: str = "binary", gamma: float = 2.0, alpha: float | WeightLike = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        if mode not in ("binary", "multiclass"):
            raise ValueError(f"focal loss mode must be 'binary' or 'multiclass', got {mode!r}")
        self.mode, self.gamma, self.reduction = mode, float(gamma), _check_reduction(reduction)
        self.alpha_scalar = alpha if mode == "binary" else None
        _buffer(self, "alpha", None if mode == "binary" else alpha)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.mode == "binary":
            return focal_bce(logits, targets, self.gamma, self.alpha_scalar, self.reduction)
        return focal_ce(logits, targets, self.gamma, self.alpha, self.reduction)


@LOSSES.register("mse")
class MaskedMSELoss(nn.Module):
    """Module form of :func:`masked_mse`."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, preds: Tensor, targets: Tensor) -> Tensor:
        return masked_mse(preds, targets, self.reduction)


@LOSSES.register("huber")
class MaskedHuberLoss(nn.Module):
    """Module form of :func:`masked_huber`."""

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.delta, self.reduction = float(delta), _check_reduction(reduction)

    def forward(self, preds: Tensor, targets: Tensor) -> Tensor:
        return masked_huber(preds, targets, self.delta, self.reduction)


# Segmentation losses live in seg_losses.py; importing them here registers them in LOSSES.
from medzoo.train.seg_losses import (  # noqa: E402
    DiceCELoss,
    DiceLoss,
    SegCELoss,
    dice_loss,
    downsample_labels,
    seg_ce,
)
