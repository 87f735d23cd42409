"""Classification metrics: confusion matrix, accuracy / sensitivity / precision per class, binary rates, and the
patient level (slice predictions aggregated per patient).

They take numpy arrays or tensors (moved to the CPU) and return numpy values. Missing targets are NaN and are left
out; a metric that is undefined (0/0, a single class present) is NaN, never a made-up number.

Example:
    >>> import numpy as np
    >>> confusion_matrix([0, 1, 1], [0, 1, 0], 2).tolist()
    [[1, 0], [1, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medzoo.metrics.auroc import _auroc_1d, _np, _scores_targets

__all__ = ["PatientPredictions", "aggregate_by_patient", "binary_metrics", "classification_metrics",
           "confusion_matrix", "one_hot_targets"]


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

