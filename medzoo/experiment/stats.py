"""The numbers of an experiment matrix: mean ± std per (task, init, fraction), and paired differences against a
reference init, seed by seed, with their 95% t interval and win counts.

Rows are the cells' ``result.json`` dicts (``task``, ``init``, ``kind``, ``fraction``, ``seed``, ``metric``, ``mode``,
``value``). Cells of one fraction and seed share the training subset and the test set, which is what makes the
differences paired.

Example:
    >>> rows = [{"task": "t", "init": "scratch", "fraction": 0.1, "seed": s, "metric": "test/t/auroc",
    ...          "value": v} for s, v in enumerate([0.6, 0.8])]
    >>> s = summarise(rows)[0]
    >>> round(s["mean"], 3), round(s["std"], 4), s["n"]
    (0.7, 0.1414, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import t

__all__ = ["ordered", "paired_differences", "summarise", "t_interval"]


def ordered(values: Sequence[Any]) -> list[Any]:
    """Unique values in first-seen order."""
    return list(dict.fromkeys(values))


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sample std over seeds per (task, init, fraction), in the rows' order.

    Returns:
        Dicts with ``task, init, kind, fraction, metric, mean, std, n, values, seeds`` (values in seed order).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["init"], float(r["fraction"])), []).append(r)
    out = []
    for (task, init, fraction), members in groups.items():
        members = sorted(members, key=lambda r: r["seed"])
        vals = np.array([float(r["value"]) for r in members])
        std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append({"task": task, "init": init, "kind": members[0].get("kind", "init"), "fraction": fraction,
                    "metric": members[0]["metric"], "mean": float(vals.mean()), "std": std, "n": len(vals),
                    "values": vals.tolist(), "seeds": [r["seed"] for r in members]})
    return out


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The two-sided t interval of the mean of ``diffs`` (NaNs for fewer than two values).

    Example:
        >>> lo, hi = t_interval([1.0, 2.0, 3.0])
        >>> round(lo, 3), round(hi, 3)
        (-0.484, 4.484)
    """
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return float("nan"), float("nan")
    half = float(t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()) - half, float(d.mean()) + half


def paired_differences(rows: Sequence[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Every other row minus ``reference``, per task and fraction, paired by seed.

    Returns:
        Dicts with ``task, init, kind, reference, fraction, metric, mode, n, mean, sd, lo, hi`` (the 95% t
        interval), ``better, worse, ties`` (seed counts; better means higher for ``mode: max``) and ``diffs``.
    """
    value = {(r["task"], r["init"], float(r["fraction"]), r["seed"]): float(r["value"]) for r in rows}
    out = []
    for s in summarise(rows):
        if s["init"] == reference:
            continue
        seeds = [seed for seed in s["seeds"] if (s["task"], reference, s["fraction"], seed) in value]
        if not seeds:
            continue
        d = np.array([value[(s["task"], s["init"], s["fraction"], k)] - value[(s["task"], reference, s["fraction"], k)]
                      for k in seeds])
        mode = next((r.get("mode", "max") for r in rows if r["task"] == s["task"]), "max")
        sign = 1.0 if mode == "max" else -1.0
        lo, hi = t_interval(d)
        out.append({"task": s["task"], "init": s["init"], "kind": s["kind"], "reference": reference,
                    "fraction": s["fraction"], "metric": s["metric"], "mode": mode, "n": len(d),
                    "mean": float(d.mean()), "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0, "lo": lo, "hi": hi,
                    "better": int((sign * d > 0).sum()), "worse": int((sign * d < 0).sum()),
                    "ties": int((d == 0).sum()), "diffs": d.tolist()})
    return out
