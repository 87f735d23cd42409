"""Plots of an experiment matrix: metric against data fraction, paired differences with their 95% intervals, and
learning curves. Baselines (rows that train no network) are drawn dashed in every plot. matplotlib runs with the
Agg backend, chosen inside the plotting functions (never at import).

Example:
    >>> rows = [{"task": "t", "init": "scratch", "kind": "init", "fraction": f, "seed": 0, "metric": "m",
    ...          "value": 0.5 + f} for f in (0.1, 1.0)]
    >>> plot_fraction_curves(rows, "fraction.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.experiment.stats import ordered as _ordered
from medzoo.experiment.stats import summarise

__all__ = ["plot_fraction_curves", "plot_learning_curves", "plot_paired"]


def _pyplot() -> Any:
    import matplotlib  # the backend is chosen when a plot is drawn, never at import (no import-time side effect)

    matplotlib.use("Agg")  # headless; set here, never at import
    import matplotlib.pyplot as plt

    return plt


def _style(kind: str) -> dict[str, Any]:
    return {"linestyle": "--", "marker": "s"} if kind == "baseline" else {"linestyle": "-", "marker": "o"}


def _fraction_axis(ax: Any, plt: Any, fractions: Sequence[float]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sorted(fractions))
    ax.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("fraction of the training data")
    ax.grid(alpha=0.3)


def _save(fig: Any, plt: Any, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same results, same bytes
    plt.close(fig)
    return Path(path)


def plot_fraction_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Metric against training-data fraction, one line per init or baseline (mean over seeds, bars: ± std)."""
    plt = _pyplot()
    summary = summarise(rows)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for init in _ordered([s["init"] for s in summary]):
        mine = [s for s in summary if s["init"] == init]
        pts = sorted((s["fraction"], s["mean"], s["std"]) for s in mine)
        x, y, e = zip(*pts)
        label = f"{init} (baseline)" if mine[0]["kind"] == "baseline" else init
        ax.errorbar(x, y, yerr=e, capsize=3, label=label, **_style(mine[0]["kind"]))
    _fraction_axis(ax, plt, {s["fraction"] for s in summary})
    ax.set_ylabel(summary[0]["metric"])
    ax.set_title(f"{summary[0]['task']}: mean ± std over seeds")
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _paired_panel(ax: Any, plt: Any, paired: Sequence[dict[str, Any]], colours: dict[str, str]) -> None:
    inits = _ordered([p["init"] for p in paired])
    width = 0.04 * (len(inits) - 1)
    for k, init in enumerate(inits):
        mine = sorted((p for p in paired if p["init"] == init), key=lambda p: p["fraction"])
        shift = 10 ** ((k - (len(inits) - 1) / 2) * width / max(len(inits) - 1, 1))  # spread on the log axis
        err = np.array([[p["mean"] - p["lo"], p["hi"] - p["mean"]] for p in mine]).T
        ax.errorbar([p["fraction"] * shift for p in mine], [p["mean"] for p in mine], yerr=np.nan_to_num(err),
                    capsize=3, label=f"{init} − {mine[0]['reference']}", color=colours[init], **_style(mine[0]["kind"]))
    ax.axhline(0.0, color="black", linewidth=0.8)
    _fraction_axis(ax, plt, {p["fraction"] for p in paired})
    ax.legend(fontsize=8)


def plot_paired(paired: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Each row minus the reference against fraction: mean paired difference and its 95% t interval; with
    baselines, a second panel shows the trained inits alone on their own scale."""
    plt = _pyplot()
    trained = [p for p in paired if p["kind"] != "baseline"]
    panels = [paired, trained] if trained and len(trained) < len(paired) else [paired]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    colours = {init: f"C{k % 10}" for k, init in enumerate(_ordered([p["init"] for p in paired]))}
    for ax, rows, title in zip(axes[0], panels, ("every row", "trained inits")):
        _paired_panel(ax, plt, rows, colours)
        ax.set_title(title if len(panels) > 1 else "", fontsize=10)
    axes[0][0].set_ylabel(f"paired difference of {paired[0]['metric']}")
    fig.suptitle(f"{paired[0]['task']}: mean difference, 95% t interval over seeds")
    return _save(fig, plt, path)


def _curve_key(rows: Sequence[dict[str, Any]]) -> str | None:
    metric = rows[0]["metric"]
    val = "val/" + metric.split("/", 1)[1] if metric.startswith("test/") else metric
    for key in (val, "val/loss"):
        if any(key in h for r in rows for h in r.get("history") or []):
            return key
    return None


def _panel(ax: Any, rows: Sequence[dict[str, Any]], fraction: float, key: str) -> None:
    colours = {}
    for init in _ordered([r["init"] for r in rows]):
        runs = [r for r in rows if r["init"] == init and float(r["fraction"]) == fraction]
        if runs and runs[0].get("kind") == "baseline":
            vals = [r["metrics"][key] for r in runs if key in r.get("metrics", {})]
            if vals:
                ax.axhline(float(np.mean(vals)), linestyle="--", label=f"{init} (baseline)",
                           color=f"C{len(colours) % 10}")
                colours[init] = True
            continue
        hists = [r.get("history") or [] for r in runs]
        steps = sorted({h["step"] for h in hists[0] if key in h}) if hists else []
        if steps:
            means = [float(np.mean([h[key] for hist in hists for h in hist if h["step"] == s and key in h]))
                     for s in steps]
            ax.plot(steps, means, marker=".", label=init, color=f"C{len(colours) % 10}")
            colours[init] = True


def plot_learning_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Validation metric against training step: one panel per fraction, one line per init (mean over seeds), each
    baseline's validation score as a dashed level.

    Returns:
        The PNG path, or None when no run recorded a validation history.
    """
    key = _curve_key(rows)
    if key is None:
        return None
    plt = _pyplot()
    fractions = sorted(_ordered([float(r["fraction"]) for r in rows]))
    fig, axes = plt.subplots(1, len(fractions), figsize=(4 * len(fractions), 3.4), squeeze=False, sharey=True)
    for ax, f in zip(axes[0], fractions):
        _panel(ax, rows, f, key)
        ax.set_title(f"fraction {f:g}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(key)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{rows[0]['task']}: learning curves (mean over seeds)")
    return _save(fig, plt, path)
