"""Regression metrics per output over non-NaN targets: mean absolute error and R².

Example:
    >>> import numpy as np
    >>> regression_metrics(np.array([1.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]), ["opacity"])["r2/opacity"]
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medzoo.metrics.auroc import _np
from medzoo.metrics.classification import _ratio

__all__ = ["mae", "r2_score", "regression_metrics"]

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
