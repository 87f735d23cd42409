"""Losses for every medzoo task. All of them take raw logits; none expects probabilities.

Missing labels are NaN (DECISIONS 8): the vector losses (``masked_bce``, ``masked_ce``, focal, MSE, Huber) drop
NaN entries before anything else, then cast class targets to ``long``. A batch with no valid label gives a zero
loss that still has a ``grad_fn``, so per-task losses can always be summed and back-propagated.

Reductions: ``"mean"`` averages over the valid entries (weighted by class weights where given, as PyTorch does);
``"sum"`` adds them up; ``"none"`` returns the per-entry losses with zeros at the missing entries. For DDP
(DECISIONS 18), use ``reduction="sum"`` and divide by the global :func:`count_valid` (all-reduced over ranks).

Segmentation losses take label maps ``[B, *S]`` (or ``[B, 1, *S]``). Where the logits are at a lower resolution than
the labels (``medicalnet_seg``, DECISIONS 5), ``match_size=True`` nearest-downsamples the labels to the logits'
size with :func:`downsample_labels`, as MedicalNet does with ``scipy.ndimage.zoom(order=0)``.

Example:
    >>> import torch
    >>> from medzoo.train.losses import LOSSES
    >>> loss_fn = LOSSES.get("bce")()
    >>> loss_fn(torch.zeros(2, 3), torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, float("nan")]]))
    tensor(0.6931)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medzoo.registry import Registry

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

LOSSES = Registry("loss")
_REDUCTIONS = ("mean", "sum", "none")
WeightLike = Tensor | Sequence[float] | None


# ----------------------------------------------------------------------------------------------------------- helpers
def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _as_weight(weight: WeightLike, n: int, name: str) -> Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}] (one value per output), got {tuple(w.shape)}")
    return w


def _valid_mask(targets: Tensor) -> Tensor:
    return ~torch.isnan(targets) if targets.is_floating_point() else torch.ones_like(targets, dtype=torch.bool)


def _reduce(elem: Tensor, valid: Tensor, reduction: str, weight: Tensor | None = None) -> Tensor:
    """Reduce per-entry losses over the valid entries; invalid ones contribute exactly zero (and zero gradient)."""
    elem = torch.where(valid, elem, torch.zeros_like(elem))
    if weight is not None:
        elem = elem * weight
    if reduction == "none":
        return elem
    total = elem.sum()
    if reduction == "sum":
        return total
    denom = valid.sum().to(elem.dtype) if weight is None else torch.where(valid, weight, 0).sum().to(elem.dtype)
    return torch.where(denom > 0, total / denom.clamp_min(torch.finfo(elem.dtype).tiny), total)


def _masked_float_targets(logits: Tensor, targets: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if logits.shape != targets.shape:
        raise ValueError(f"{name}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must match")
    valid = _valid_mask(targets)
    return valid, torch.where(valid, targets, torch.zeros_like(targets)).to(logits.dtype)


def _binary_targets(logits: Tensor, targets: Tensor, name: str) -> tuple[Tensor, Tensor]:
    valid, t = _masked_float_targets(logits, targets, name)
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"{name}: targets must lie in [0, 1] (NaN = unknown), got values in [{t.min()}, {t.max()}]")
    return valid, t


def _class_index(targets: Tensor, valid: Tensor, num_classes: int, name: str, ignore: int | None = None) -> Tensor:
    """Cast masked class targets to long after checking they are integral and in ``[0, num_classes)``."""
    t = torch.where(valid, targets, torch.zeros_like(targets))
    bad = (t != torch.round(t)) | (t < 0) | (t >= num_classes)
    if ignore is not None:
        bad &= t != ignore
    if bool(bad.any()):
        raise ValueError(
            f"{name}: class targets must be integers in [0, {num_classes})"
            + (f" or {ignore} (ignored)" if ignore is not None else "")
            + f", got {t[bad].flatten()[:5].tolist()}"
        )
    return t.long()


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
    """Cross-entropy over the samples that have a class label (DECISIONS 8: mask first, then cast to long).

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

    ``A`` are the softmax (or sigmoid) probabilities and ``B`` the one-hot targets, as in the lecture.

    Args:
        logits: ``[B, C, *s]``.
        target: a label map ``[B, *S]`` / ``[B, 1, *S]``, or a float one-hot/multi-label ``[B, C, *s]``.
        sigmoid: independent sigmoid channels instead of a softmax over classes.
        squared: squared sums in the denominator (the lecture's form); False uses ``sum(A) + sum(B)``.
        smooth: ``eps`` added to numerator and denominator.
        include_background: keep channel 0 in the mean.
        batch: sum over the batch before the ratio (one Dice per class) instead of one per sample and class.
        ignore_index: label value whose voxels are left out of both sums.
        match_size: nearest-downsample label maps to the logits' size.

    Example:
        >>> dice_loss(torch.tensor([[[-9.0, 9.0]], [[9.0, -9.0]]]).permute(1, 0, 2), torch.tensor([[1, 0]]))
        tensor(0.)
    """
    onehot, valid = _dice_target(logits, target, sigmoid, ignore_index, match_size)
    probs = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=1)
    probs, onehot = probs * valid, onehot * valid
    if not include_background:
        if probs.shape[1] < 2:
            raise ValueError("dice: include_background=False needs at least 2 channels")
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = ([0] if batch else []) + list(range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    den = (probs**2).sum(dims) + (onehot**2).sum(dims) if squared else probs.sum(dims) + onehot.sum(dims)
    return (1 - (2 * inter + smooth) / (den + smooth)).mean()


# ------------------------------------------------------------------------------------------------------- modules
def _buffer(module: nn.Module, name: str, value: WeightLike) -> None:
    module.register_buffer(name, None if value is None else torch.as_tensor(value, dtype=torch.float32),
                           persistent=False)


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
