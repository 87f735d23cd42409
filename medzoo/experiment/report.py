"""Tables, generated claims and report files of an experiment matrix.

Rows are the cells' ``result.json`` dicts (keys ``task``, ``init``, ``fraction``, ``seed``, ``metric``, ``value``,
``kind`` (``init`` or ``baseline``), ``history``...); the numbers come from :mod:`medzoo.experiment.stats` (mean ±
std per init and fraction; paired differences against the reference init with 95% t intervals and win counts).
:func:`claims` turns those numbers into sentences that say what the intervals support and nothing more. Every
file here is a function of the results alone (no timings), so reruns with any thread or worker count write the same
bytes.

Example:
    >>> rows = [{"task": "t", "init": i, "kind": "init", "fraction": 0.1, "seed": s, "metric": "test/t/dice/x",
    ...          "value": v} for i, vals in (("scratch", [0.80, 0.85]), ("zoo", [0.84, 0.86]))
    ...          for s, v in enumerate(vals)]
    >>> print(paired_table(paired_differences(rows, "scratch"), "t"))
    paired difference  fraction 0.1
    -----------------  ------------------------------
    zoo − scratch      +0.0250 [-0.1656, +0.2156] 2/2
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medzoo.experiment import plots as P
from medzoo.experiment.stats import ordered, paired_differences, summarise, t_interval
from medzoo.utils.tables import render

__all__ = ["CSV_FIELDS", "claims", "format_table", "markdown_table", "paired_differences", "paired_table",
           "summarise", "t_interval", "write_results"]

CSV_FIELDS = ("cell", "task", "init", "kind", "fraction", "seed", "metric", "value", "steps")


def _cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    if math.isnan(s["mean"]):
        return "nan"
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"


def _grid(summary: Sequence[dict[str, Any]], task: str) -> tuple[list[str], list[float], dict[tuple, dict]]:
    mine = [s for s in summary if s["task"] == task]
    inits = ordered([s["init"] for s in mine])
    fractions = sorted(ordered([s["fraction"] for s in mine]))
    return inits, fractions, {(s["init"], s["fraction"]): s for s in mine}


def _label(s: dict[str, Any]) -> str:
    return f"{s['init']} (baseline)" if s.get("kind") == "baseline" else s["init"]


def _task_table(summary: Sequence[dict[str, Any]], task: str, style: str) -> str:
    inits, fractions, at = _grid(summary, task)
    rows = [[_label(at[(i, fractions[0])])] + [_cell(at.get((i, f))) for f in fractions] for i in inits]
    return render(["model"] + [f"fraction {f:g}" for f in fractions], rows, style=style)


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """A plain text table per task: one row per init or baseline, one column per fraction (mean ± std)."""
    blocks = []
    for task in ordered([s["task"] for s in summary]):
        first = next(s for s in summary if s["task"] == task)
        blocks.append(f"{task}: {first['metric']} (mean ± std over {first['n']} seed(s))\n"
                      + _task_table(summary, task, "text"))
    return "\n\n".join(blocks)


def markdown_table(summary: Sequence[dict[str, Any]], task: str) -> str:
    """The markdown table of one task (rows: inits and baselines; columns: fractions; cells: mean ± std)."""
    return _task_table(summary, task, "markdown")


def _signed(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:+.4f}"


def paired_table(paired: Sequence[dict[str, Any]], task: str, style: str = "text") -> str:
    """Rows: ``init − reference``; columns: fractions; cells: mean difference [95% CI] and seeds better/total."""
    mine = [p for p in paired if p["task"] == task]
    fractions = sorted(ordered([p["fraction"] for p in mine]))
    at = {(p["init"], p["fraction"]): p for p in mine}
    rows = []
    for init in ordered([p["init"] for p in mine]):
        cells = []
        for f in fractions:
            p = at.get((init, f))
            cells.append("-" if p is None else
                         f"{_signed(p['mean'])} [{_signed(p['lo'])}, {_signed(p['hi'])}] {p['better']}/{p['n']}")
        rows.append([f"{init} − {mine[0]['reference']}"] + cells)
    return render(["paired difference"] + [f"fraction {f:g}" for f in fractions], rows, style=style)


def _verdict(p: dict[str, Any]) -> str:
    if p["n"] < 2:
        return "one seed gives no interval, so no conclusion"
    higher = "higher" if p["mode"] == "max" else "lower (better)"
    if p["lo"] > 0:
        return f"the interval lies above 0: {p['init']} scores higher than {p['reference']} at this fraction"
    if p["hi"] < 0:
        return f"the interval lies below 0: {p['init']} scores lower than {p['reference']} at this fraction"
    return f"the interval includes 0: these seeds do not show {p['init']} {higher} than {p['reference']}, nor lower"


def _baseline_sentence(rows: Sequence[dict[str, Any]], task: str) -> str | None:
    summary = [s for s in summarise(rows) if s["task"] == task]
    top = max(s["fraction"] for s in summary)
    at = [s for s in summary if s["fraction"] == top]
    inits = [s for s in at if s["kind"] != "baseline"]
    if not inits:
        return None
    low, high = min(inits, key=lambda s: s["mean"]), max(inits, key=lambda s: s["mean"])
    out = []
    for b in (s for s in at if s["kind"] == "baseline"):
        if b["mean"] < low["mean"]:
            where = f"below every trained init (the lowest: {low['init']} {low['mean']:.3f})"
        elif b["mean"] > high["mean"]:
            where = f"above every trained init (the highest: {high['init']} {high['mean']:.3f})"
        else:
            where = f"between the trained inits ({low['init']} {low['mean']:.3f}, {high['init']} {high['mean']:.3f})"
        out.append(f"{b['init']} {b['mean']:.3f} ± {b['std']:.3f}, {where}")
    return f"At fraction {top:g}, the baselines score: " + "; ".join(out) + "." if out else None


def claims(rows: Sequence[dict[str, Any]], paired: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences generated from the numbers: each trained init against the reference at each fraction, the
    baselines against the trained inits at the largest fraction, and what the intervals cover."""
    out = []
    for p in (p for p in paired if p["kind"] != "baseline"):
        out.append(f"Fraction {p['fraction']:g}: {p['init']} − {p['reference']} = {_signed(p['mean'])} "
                   f"(95% CI {_signed(p['lo'])} to {_signed(p['hi'])}, t over {p['n']} paired seed(s); "
                   f"{p['init']} better on {p['better']} of {p['n']}); {_verdict(p)}.")
    for task in ordered([r["task"] for r in rows]):
        sentence = _baseline_sentence(rows, task)
        if sentence:
            out.append(sentence)
    n_test = next((r["n_test"] for r in rows if "n_test" in r), None)
    tests = f"the same {n_test} test images" if n_test else "one fixed test set"
    out.append(f"Each interval covers what the seeds vary (the training subset, the initialisation of new layers, "
               f"the batch order and any augmentation) with every cell scored on {tests}; it does not cover other test "
               "sets, other data or other training budgets.")
    return out


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (repr(float(r[k])) if k == "value" else r.get(k, "init" if k == "kind" else None))
                             for k in CSV_FIELDS})
    os.replace(tmp, path)
    return path


def _results_md(rows: Sequence[dict[str, Any]], title: str, reference: str | None, plots: dict[str, str]) -> str:
    summary = summarise(rows)
    paired = paired_differences(rows, reference) if reference else []
    parts = [f"# {title}: results", "",
             "Mean ± sample standard deviation over seeds; per-cell values in results.csv.", ""]
    for task in ordered([s["task"] for s in summary]):
        metric = next(s["metric"] for s in summary if s["task"] == task)
        parts += [f"## {task}: `{metric}`", "", markdown_table(summary, task), ""]
        if any(p["task"] == task for p in paired):
            parts += [f"Paired differences against `{reference}` (same seed, subset and test set): mean [95% t "
                      "interval] and the seeds on which the row is better.", "",
                      paired_table(paired, task, "markdown"), ""]
        for kind in ("fraction", "paired", "curves"):
            key = f"{kind}:{task}"
            if key in plots:
                parts += [f"![{task} {kind}]({Path(plots[key]).name})", ""]
    if paired:
        parts += ["## What the numbers support", "", *[f"- {c}" for c in claims(rows, paired)], ""]
    return "\n".join(parts)


def write_results(out: str | os.PathLike, rows: Sequence[dict[str, Any]], *, title: str = "experiment",
                  reference: str | None = None, plots: bool = True) -> dict[str, str]:
    """Write ``results.csv``, the plots (``fraction_<task>.png``, ``paired_<task>.png``, ``curves_<task>.png``) and
    ``results.md``.

    Returns:
        ``{"csv": path, "md": path, "fraction:<task>": png, "paired:<task>": png, "curves:<task>": png}``.
    """
    out = Path(out)
    files = {"csv": str(_write_csv(out / "results.csv", rows))}
    pngs: dict[str, str] = {}
    if plots:
        for task in ordered([r["task"] for r in rows]):
            mine = [r for r in rows if r["task"] == task]
            pngs[f"fraction:{task}"] = str(P.plot_fraction_curves(mine, out / f"fraction_{task}.png"))
            if reference and (paired := paired_differences(mine, reference)):
                pngs[f"paired:{task}"] = str(P.plot_paired(paired, out / f"paired_{task}.png"))
            curves = P.plot_learning_curves(mine, out / f"curves_{task}.png")
            if curves is not None:
                pngs[f"curves:{task}"] = str(curves)
    md = out / "results.md"
    md.write_text(_results_md(rows, title, reference, pngs) + "\n", encoding="utf-8")
    return {**files, "md": str(md), **pngs}
