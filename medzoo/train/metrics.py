"""Evaluation metrics: segmentation overlap, AUROC with bootstrap CIs, classification, regression, patient level.

Segmentation metrics work on torch tensors (they run on model outputs, possibly on the GPU). The others take
numpy arrays or tensors (moved to the CPU) and return numpy values. Missing targets are NaN everywhere and are
left out per label; a metric that is undefined (0/0, a single class present) is NaN, never a made-up number.

Example:
    >>> import numpy as np
    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medzoo.train.auroc import AurocCI, _auroc_1d, _np, _scores_targets, auroc, auroc_bootstrap_ci, mean_auroc

__all__ = [
    "AurocCI",
    "PatientPredictions",
    "aggregate_by_patient",
    "auroc",
    "auroc_bootstrap_ci",
    "binary_metrics",
    "classification_metrics",
    "confusion_matrix",
    "dice_per_class",
    "iou_per_class",
    "mae",
    "mean_auroc",
    "one_hot_targets",
    "r2_score",
    "regression_metrics",
]

logger = logging.getLogger(__name__)




# ------------------------------------------------------------------------------------------------ segmentation
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


def one_hot_targets(y: Any, num_classes: int) -> np.ndarray:
    """Class indices ``[N]`` (NaN = missing) -> ``[N, K]`` 0/1 with NaN rows, for one-vs-rest AUROC.

    Example:
        >>> one_hot_targets(np.array([1, np.nan]), 2)
        array([[ 0.,  1.],
               [nan, nan]])
    """
    y = _np(y)
    valid = ~np.isnan(y)
    idx = _class_indices(y[valid], num_classes, "one_hot_targets")
    out = np.full((len(y), num_classes), np.nan)
    out[valid] = np.eye(num_classes)[idx]
    return out


# --------------------------------------------------------------------------------------------- classification
def _class_indices(y: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    if ((y != np.round(y)) | (y < 0) | (y >= num_classes)).any():
        raise ValueError(f"{name}: class labels must be integers in [0, {num_classes}), got {np.unique(y)[:5]}")
    return y.astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts ``[K, K]``: rows are true classes, columns predicted ones. NaN targets are left out.

    Args:
        y_true: ``[N]`` class indices, NaN = missing.
        y_pred: ``[N]`` predicted indices, or ``[N, K]`` scores (argmax is taken).
        num_classes: K.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2)
        array([[1, 0],
               [1, 1]])
    """
    t, p = _np(y_true), _np(y_pred)
    if p.ndim == 2:
        p = p.argmax(axis=1).astype(np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true must be [N] and y_pred [N] or [N, K], got {t.shape} and {_np(y_pred).shape}")
    valid = ~np.isnan(t)
    ti = _class_indices(t[valid], num_classes, "confusion_matrix y_true")
    pi = _class_indices(p[valid], num_classes, "confusion_matrix y_pred")
    return np.bincount(ti * num_classes + pi, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den != 0)


def _per_class_rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    fn, fp = cm.sum(axis=1) - tp, cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    sens, prec = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
    return {"sensitivity": sens, "specificity": _ratio(tn, tn + fp), "precision": prec,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def classification_metrics(y_true: Any, y_pred: Any, num_classes: int,
                           class_names: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy, per-class sensitivity (recall), specificity, precision (PPV), F1, and their macro means.

    F1 is ``2TP / (2TP + FP + FN)``; a 0/0 rate is NaN and macro means skip NaN.

    Args:
        y_true: ``[N]`` class indices, NaN = missing.
        y_pred: ``[N]`` indices or ``[N, K]`` scores.
        num_classes: K.
        class_names: K names for the keys (default ``"0"``, ``"1"``, ...).

    Returns:
        A flat dict: ``accuracy``, ``macro_<rate>`` and ``<rate>/<class name>``.

    Example:
        >>> classification_metrics([0, 1, 1, 1], [0, 0, 1, 1], 2)["sensitivity/1"]
        0.6666666666666666
    """
    names = [str(i) for i in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
    cm = confusion_matrix(y_true, y_pred, num_classes)
    out = {"accuracy": float(_ratio(np.trace(cm), cm.sum()))}
    for rate, values in _per_class_rates(cm).items():
        out[f"macro_{rate}"] = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
        out.update({f"{rate}/{n}": float(v) for n, v in zip(names, values)})
    return out


def binary_metrics(y_true: Any, scores: Any, threshold: float = 0.5) -> dict[str, float]:
    """Binary accuracy, sensitivity, specificity, precision, F1 (positive class) and AUROC.

    Args:
        y_true: ``[N]`` 0/1, NaN = missing.
        scores: ``[N]`` probabilities of the positive class; predicted positive when ``score >= threshold``.
        threshold: the decision threshold.

    Example:
        >>> binary_metrics([0, 1, 1], [0.2, 0.7, 0.4])["sensitivity"]
        0.5
    """
    s, t = _scores_targets(scores, y_true)
    if t.ndim != 1:
        raise ValueError(f"binary_metrics takes [N] inputs, got {t.shape}")
    cm = confusion_matrix(t, (s >= threshold).astype(np.float64), 2)
    rates = _per_class_rates(cm)
    out = {"accuracy": float(_ratio(np.trace(cm), cm.sum()))}
    out.update({k: float(v[1]) for k, v in rates.items()})
    out["auroc"] = _auroc_1d(s, t)
    return out


# ------------------------------------------------------------------------------------------------- regression
def _regression_inputs(preds: Any, targets: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    p, t = _np(preds), _np(targets)
    if p.shape != t.shape or p.ndim not in (1, 2):
        raise ValueError(f"preds and targets must both be [N] or [N, L], got {p.shape} and {t.shape}")
    return p.reshape(len(p), -1), t.reshape(len(t), -1), p.ndim == 1


def mae(preds: Any, targets: Any) -> float | np.ndarray:
    """Mean absolute error per output over non-NaN targets (NaN for an output without targets).

    Example:
        >>> mae(np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([[2.0, np.nan], [1.0, 1.0]]))
        array([1.5, 1. ])
    """
    p, t, flat = _regression_inputs(preds, targets)
    valid = ~np.isnan(t)
    out = _ratio(np.where(valid, np.abs(p - np.nan_to_num(t)), 0).sum(axis=0), valid.sum(axis=0))
    return float(out[0]) if flat else out


def r2_score(preds: Any, targets: Any) -> float | np.ndarray:
    """Coefficient of determination ``1 - SS_res / SS_tot`` per output over non-NaN targets.

    NaN where an output has fewer than 2 targets or constant targets (``SS_tot = 0``).

    Example:
        >>> r2_score(np.array([1.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]))
        0.5
    """
    p, t, flat = _regression_inputs(preds, targets)
    out = np.full(p.shape[1], np.nan)
    for j in range(p.shape[1]):
        v = ~np.isnan(t[:, j])
        if v.sum() >= 2:
            ss_tot = ((t[v, j] - t[v, j].mean()) ** 2).sum()
            out[j] = 1 - ((t[v, j] - p[v, j]) ** 2).sum() / ss_tot if ss_tot > 0 else np.nan
    return float(out[0]) if flat else out


def regression_metrics(preds: Any, targets: Any, names: Sequence[str] | None = None) -> dict[str, float]:
    """``mae/<name>`` and ``r2/<name>`` per output (e.g. severity ``geographic`` and ``opacity``).

    Example:
        >>> regression_metrics(np.array([1.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]), ["opacity"])["r2/opacity"]
        0.5
    """
    m, r = np.atleast_1d(mae(preds, targets)), np.atleast_1d(r2_score(preds, targets))
    names = [str(j) for j in range(len(m))] if names is None else list(names)
    if len(names) != len(m):
        raise ValueError(f"names has {len(names)} entries for {len(m)} outputs")
    return {**{f"mae/{n}": float(v) for n, v in zip(names, m)}, **{f"r2/{n}": float(v) for n, v in zip(names, r)}}


# ---------------------------------------------------------------------------------------------- patient level
@dataclass(frozen=True)
class PatientPredictions:
    """Slice predictions aggregated per patient, in order of first appearance.

    Attributes:
        patient_ids: P ids.
        probs: ``[P, K]`` mean slice probabilities (``"mean"``) or vote fractions (``"majority"``).
        pred: ``[P]`` predicted class per patient.
        targets: ``[P]`` patient labels (NaN when no slice has one).
        n_slices: ``[P]`` slice counts.
    """

    patient_ids: list[str]
    probs: np.ndarray
    pred: np.ndarray
    targets: np.ndarray
    n_slices: np.ndarray


def _patient_targets(groups: np.ndarray, targets: Any, ids: list[str], n: int) -> np.ndarray:
    out = np.full(len(ids), np.nan)
    if targets is None:
        return out
    t = _np(targets)
    if t.shape != (n,):
        raise ValueError(f"targets must be [N] = [{n}], got {t.shape}")
    for g, pid in enumerate(ids):
        vals = np.unique(t[(groups == g) & ~np.isnan(t)])
        if len(vals) > 1:
            raise ValueError(f"patient {pid!r} has slices with different labels {vals.tolist()}")
        out[g] = vals[0] if len(vals) else np.nan
    return out


def aggregate_by_patient(patient_ids: Sequence[Any], probs: Any, targets: Any = None,
                         method: str = "mean") -> PatientPredictions:
    """Aggregate slice-level probabilities to patient level (COVIDx-CT).

    ``"mean"`` averages the slice probabilities and predicts their argmax. ``"majority"`` counts each slice's
    argmax; a tie between classes is broken by the higher mean probability.

    Args:
        patient_ids: ``[N]`` patient id of each slice.
        probs: ``[N, K]`` slice probabilities, or ``[N]`` positive-class probabilities (read as ``[1 - p, p]``).
        targets: optional ``[N]`` slice labels; all labelled slices of a patient must agree.
        method: ``"mean"`` or ``"majority"``.

    Example:
        >>> agg = aggregate_by_patient(["a", "a", "b"], np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]))
        >>> agg.patient_ids, agg.pred.tolist()
        (['a', 'b'], [0, 1])
    """
    if method not in ("mean", "majority"):
        raise ValueError(f"method must be 'mean' or 'majority', got {method!r}")
    p = _np(probs)
    p = np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
    if p.ndim != 2 or len(p) != len(patient_ids):
        raise ValueError(f"probs must be [N] or [N, K] with N = {len(patient_ids)} slices, got {p.shape}")
    keys = [str(x) for x in patient_ids]
    ids = list(dict.fromkeys(keys))
    pos = {k: i for i, k in enumerate(ids)}
    groups = np.array([pos[k] for k in keys], dtype=np.int64)
    n_slices = np.bincount(groups, minlength=len(ids))
    mean = np.stack([np.bincount(groups, p[:, k], len(ids)) for k in range(p.shape[1])], axis=1) / n_slices[:, None]
    if method == "mean":
        out, pred = mean, mean.argmax(axis=1)
    else:
        votes = np.zeros_like(mean)
        np.add.at(votes, (groups, p.argmax(axis=1)), 1.0)
        out, pred = votes / n_slices[:, None], (2 * votes + mean).argmax(axis=1)
    return PatientPredictions(ids, out, pred, _patient_targets(groups, targets, ids, len(keys)), n_slices)

