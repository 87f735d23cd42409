"""AUROC: rank-based (Mann-Whitney U with average ranks for ties), per label and mean, with bootstrap CIs.

NaN targets are left out per label; a label with a single class present gives NaN and is skipped in the mean.

Example:
    >>> import numpy as np
    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from medzoo.metrics.bootstrap import ResamplingUnits

__all__ = ["AurocCI", "auroc", "auroc_bootstrap_ci", "mean_auroc"]

logger = logging.getLogger(__name__)


def _np(x: Any, dtype: type = np.float64) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


# ------------------------------------------------------------------------------------------------------ AUROC
def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    counts = np.bincount(group)
    ends = np.cumsum(counts)
    ranks = np.empty(len(x))
    ranks[order] = (ends - (counts - 1) / 2.0)[group]
    return ranks


def _auroc_1d(s: np.ndarray, t: np.ndarray) -> float:
    valid = ~np.isnan(t)
    s, t = s[valid], t[valid]
    pos = t == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    u = _average_ranks(s)[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _scores_targets(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    s, t = _np(scores), _np(targets)
    if s.shape != t.shape or s.ndim not in (1, 2):
        raise ValueError(f"scores and targets must both be [N] or [N, L], got {s.shape} and {t.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; only targets may be NaN (missing labels)")
    labels = t[~np.isnan(t)]
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"AUROC targets must be 0, 1 or NaN, got values {np.unique(labels)[:5].tolist()}")
    return s, t


def auroc(scores: Any, targets: Any) -> float | np.ndarray:
    """Area under the ROC curve per label, from ranks (Mann-Whitney U, average ranks for ties).

    Equals the probability that a random positive scores above a random negative, ties counting 1/2.

    Args:
        scores: ``[N]`` or ``[N, L]`` (probabilities or logits; only the order matters).
        targets: same shape, 0/1, NaN = missing (left out of that label only).

    Returns:
        A float for ``[N]`` inputs, else ``[L]``; NaN where a label has only one class.

    Example:
        >>> auroc(np.array([0.2, 0.2, 0.9]), np.array([0, 1, 1]))
        0.75
    """
    s, t = _scores_targets(scores, targets)
    if s.ndim == 1:
        return _auroc_1d(s, t)
    return np.array([_auroc_1d(s[:, j], t[:, j]) for j in range(s.shape[1])])


def mean_auroc(scores: Any, targets: Any) -> float:
    """Mean AUROC over the labels where it is defined (the CheXNet table's mean); NaN if none is.

    Example:
        >>> mean_auroc(np.array([[0.1, 0.3], [0.9, 0.2]]), np.array([[0, 1], [1, 1]]))
        1.0
    """
    per_label = np.atleast_1d(auroc(scores, targets))
    undefined = np.flatnonzero(np.isnan(per_label))
    if len(undefined):
        logger.debug("mean AUROC skips labels %s (a single class present)", undefined.tolist())
    return float(np.nanmean(per_label)) if len(undefined) < len(per_label) else float("nan")


@dataclass(frozen=True)
class AurocCI:
    """AUROC point estimates with percentile bootstrap intervals.

    Attributes:
        auroc: ``[L]`` per-label AUROC on the full data (``L = 1`` for ``[N]`` inputs).
        lower: ``[L]`` lower bounds; ``upper``: ``[L]`` upper bounds (NaN when undefined in every replicate).
        mean: mean AUROC; ``mean_lower`` / ``mean_upper`` its interval.
        n_boot: number of replicates; ``level``: the coverage (0.95).
        clustered: whether clusters (patients) were resampled rather than rows.
        n_units: the number of rows, or of clusters, each replicate draws.
    """

    auroc: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    mean: float
    mean_lower: float
    mean_upper: float
    n_boot: int
    level: float
    clustered: bool = False
    n_units: int = 0


def auroc_bootstrap_ci(scores: Any, targets: Any, n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0, groups: Sequence[Hashable] | None = None) -> AurocCI:
    """Percentile bootstrap confidence intervals for per-label and mean AUROC, over rows or over clusters.

    Without ``groups``, replicate ``b`` resamples whole rows with ``rng.integers(0, N, size=N)``, drawn in order
    from ``np.random.default_rng(seed)``. With ``groups`` (a cluster key per row, usually the patient), it draws
    the G clusters instead, ``rng.integers(0, G, size=G)``, and keeps every row of each drawn cluster (a cluster
    bootstrap; see :class:`~medzoo.metrics.bootstrap.ResamplingUnits`): the images of one patient are not
    independent, and treating them so makes the interval too narrow. A replicate where a label has one class only
    is dropped for that label. The bounds are ``np.nanpercentile`` (linear) at ``(1 - level) / 2`` and
    ``(1 + level) / 2``.

    Args:
        scores: ``[N]`` or ``[N, L]``.
        targets: same shape, 0/1/NaN.
        n_boot: number of bootstrap replicates.
        level: interval coverage.
        seed: RNG seed; the same seed gives the same intervals.
        groups: ``[N]`` cluster keys (patient ids), or None to resample rows.

    Example:
        >>> ci = auroc_bootstrap_ci(np.arange(8.0), np.array([0, 0, 1, 0, 1, 0, 1, 1]), n_boot=50)
        >>> bool(ci.lower[0] <= ci.auroc[0] <= ci.upper[0])
        True
        >>> auroc_bootstrap_ci(np.arange(8.0), np.array([0, 0, 1, 0, 1, 0, 1, 1]), n_boot=50,
        ...                    groups=[0, 0, 1, 1, 2, 2, 3, 3]).n_units
        4
    """
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got n_boot={n_boot}, level={level}")
    s, t = _scores_targets(scores, targets)
    s, t = s.reshape(len(s), -1), t.reshape(len(t), -1)
    units = ResamplingUnits.of(groups, len(s))
    rng = np.random.default_rng(seed)
    reps = np.empty((n_boot, s.shape[1]))
    for b in range(n_boot):
        idx = units.draw(rng)
        reps[b] = [_auroc_1d(s[idx, j], t[idx, j]) for j in range(s.shape[1])]
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    with warnings.catch_warnings():  # all-NaN columns (a label never defined) give NaN bounds, not warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(reps, q, axis=0)
        rep_means = np.nanmean(reps, axis=1)
        mean_lo, mean_hi = np.nanpercentile(rep_means, q)
    point = np.array([_auroc_1d(s[:, j], t[:, j]) for j in range(s.shape[1])])
    return AurocCI(point, lo, hi, mean_auroc(s, t), float(mean_lo), float(mean_hi), n_boot, level,
                   units.clustered, units.n_units)
