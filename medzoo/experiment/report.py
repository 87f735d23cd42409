"""Tables, plots and report files of an experiment matrix.

Rows are the cells' ``result.json`` dicts (keys ``task``, ``init``, ``fraction``, ``seed``, ``metric``, ``value``,
``history``...). :func:`summarise` groups them by (task, init, fraction) into mean, sample standard deviation
(``ddof=1``; 0 for one seed) and count. Plots use matplotlib with the Agg backend, chosen inside the plotting
functions (never at import).

Example:
    >>> rows = [{"task": "t", "init": "scratch", "fraction": 0.1, "seed": s, "metric": "test/t/auroc",
    ...          "value": v} for s, v in enumerate([0.6, 0.8])]
    >>> s = summarise(rows)[0]
    >>> round(s["mean"], 3), round(s["std"], 4), s["n"]
    (0.7, 0.1414, 2)
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CSV_FIELDS", "format_table", "markdown_table", "plot_fraction_curves", "plot_learning_curves",
           "summarise", "write_results"]

CSV_FIELDS = ("cell", "task", "init", "fraction", "seed", "metric", "value", "steps", "seconds")


def _ordered(values: Sequence[Any]) -> list[Any]:
    """Unique values in first-seen order."""
    return list(dict.fromkeys(values))


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sample std over seeds per (task, init, fraction), in the rows' order.

    Returns:
        Dicts with ``task, init, fraction, metric, mean, std, n, values`` (values in seed order).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["init"], float(r["fraction"])), []).append(r)
    out = []
    for (task, init, fraction), members in groups.items():
        members = sorted(members, key=lambda r: r["seed"])
        vals = np.array([float(r["value"]) for r in members])
        std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append({"task": task, "init": init, "fraction": fraction, "metric": members[0]["metric"],
                    "mean": float(vals.mean()), "std": std, "n": len(vals), "values": vals.tolist(),
                    "seeds": [r["seed"] for r in members]})
    return out


def _cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    if math.isnan(s["mean"]):
        return "nan"
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"


def _grid(summary: Sequence[dict[str, Any]], task: str) -> tuple[list[str], list[float], dict[tuple, dict]]:
    mine = [s for s in summary if s["task"] == task]
    inits = _ordered([s["init"] for s in mine])
    fractions = sorted(_ordered([s["fraction"] for s in mine]))
    return inits, fractions, {(s["init"], s["fraction"]): s for s in mine}


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(cells, widths)))


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """A plain text table per task: one row per init, one column per data fraction (mean ± std over seeds)."""
    blocks = []
    for task in _ordered([s["task"] for s in summary]):
        inits, fractions, at = _grid(summary, task)
        first = next(s for s in summary if s["task"] == task)
        head = ["init"] + [f"fraction {f:g}" for f in fractions]
        body = [[i] + [_cell(at.get((i, f))) for f in fractions] for i in inits]
        widths = [max(len(r[c]) for r in [head, *body]) for c in range(len(head))]
        lines = [f"{task}: {first['metric']} (mean ± std over {first['n']} seed(s))", _row(head, widths),
                 "  ".join("-" * w for w in widths)]
        blocks.append("\n".join(lines + [_row(r, widths) for r in body]))
    return "\n\n".join(blocks)


def markdown_table(summary: Sequence[dict[str, Any]], task: str) -> str:
    """The markdown table of one task (rows: inits; columns: fractions; cells: mean ± std (n))."""
    inits, fractions, at = _grid(summary, task)
    lines = ["| init | " + " | ".join(f"fraction {f:g}" for f in fractions) + " |",
             "|---|" + "---:|" * len(fractions)]
    for i in inits:
        cells = [at.get((i, f)) for f in fractions]
        lines.append(f"| {i} | " + " | ".join(f"{_cell(s)} (n={s['n']})" if s else "-" for s in cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (repr(float(r[k])) if k == "value" else r.get(k)) for k in CSV_FIELDS})
    os.replace(tmp, path)
    return path


def _results_md(rows: Sequence[dict[str, Any]], title: str, plots: dict[str, str]) -> str:
    summary = summarise(rows)
    parts = [f"# {title}: results", "",
             "Mean ± sample standard deviation over seeds (n = number of seeds); per-cell values in results.csv.", ""]
    for task in _ordered([s["task"] for s in summary]):
        metric = next(s["metric"] for s in summary if s["task"] == task)
        parts += [f"## {task}: `{metric}`", "", markdown_table(summary, task), ""]
        for kind in ("fraction", "curves"):
            key = f"{kind}:{task}"
            if key in plots:
                parts += [f"![{task} {kind}]({Path(plots[key]).name})", ""]
    return "\n".join(parts)


def write_results(out: str | os.PathLike, rows: Sequence[dict[str, Any]], *, title: str = "experiment",
                  plots: bool = True) -> dict[str, str]:
    """Write ``results.csv``, the plots (``fraction_<task>.png``, ``curves_<task>.png``) and ``results.md``.

    Returns:
        ``{"csv": path, "md": path, "fraction:<task>": png, "curves:<task>": png}``.
    """
    out = Path(out)
    files = {"csv": str(_write_csv(out / "results.csv", rows))}
    pngs: dict[str, str] = {}
    if plots:
        for task in _ordered([r["task"] for r in rows]):
            mine = [r for r in rows if r["task"] == task]
            pngs[f"fraction:{task}"] = str(plot_fraction_curves(mine, out / f"fraction_{task}.png"))
            curves = plot_learning_curves(mine, out / f"curves_{task}.png")
            if curves is not None:
                pngs[f"curves:{task}"] = str(curves)
    md = out / "results.md"
    md.write_text(_results_md(rows, title, pngs) + "\n", encoding="utf-8")
    return {**files, "md": str(md), **pngs}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless; set here, never at import
    import matplotlib.pyplot as plt

    return plt


def plot_fraction_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Metric against training-data fraction, one line per init (mean over seeds, bars: ± std)."""
    plt = _pyplot()
    summary = summarise(rows)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for init in _ordered([s["init"] for s in summary]):
        pts = sorted((s["fraction"], s["mean"], s["std"]) for s in summary if s["init"] == init)
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=init)
    ax.set_xscale("log")
    ax.set_xticks(sorted({s["fraction"] for s in summary}))
    ax.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("fraction of the training data")
    ax.set_ylabel(summary[0]["metric"])
    ax.set_title(f"{summary[0]['task']}: mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _curve_key(rows: Sequence[dict[str, Any]]) -> str | None:
    metric = rows[0]["metric"]
    val = "val/" + metric.split("/", 1)[1] if metric.startswith("test/") else metric
    for key in (val, "val/loss"):
        if any(key in h for r in rows for h in r.get("history") or []):
            return key
    return None


def plot_learning_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Validation metric against training step: one panel per fraction, one line per init (mean over seeds).

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
        for init in _ordered([r["init"] for r in rows]):
            runs = [r.get("history") or [] for r in rows if r["init"] == init and float(r["fraction"]) == f]
            steps = sorted({h["step"] for h in runs[0] if key in h}) if runs else []
            if not steps:
                continue
            means = [float(np.mean([h[key] for hist in runs for h in hist if h["step"] == s and key in h]))
                     for s in steps]
            ax.plot(steps, means, marker=".", label=init)
        ax.set_title(f"fraction {f:g}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(key)
    axes[0][-1].legend()
    fig.suptitle(f"{rows[0]['task']}: learning curves (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
