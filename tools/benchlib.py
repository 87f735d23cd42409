"""Shared benchmark helpers for the suites in ``tools/``: interleaved A/B timing, the machine description, tables,
targets and the BENCHMARKS.md writer.

Figures are ratios measured side by side in one run (the machine is shared and noisy): each repeat times A then B
(alternating the order), and a ratio is the median of per-repeat ratios.

A suite returns rows (dicts). A row states a target in one of two ways, both read by :func:`row_targets`:

- ``ratio`` with ``target``: a string ``">= 1.8"`` / ``"<= 1.05"``, a number (meaning ``>=``), or anything else
  (``"report"``: a figure without a target);
- pairs ``<figure>_vs_<x>`` with ``target_vs_<x>`` (a number, meaning ``>=``), e.g. ``speedup_vs_loop``.

A row may explain a figure in ``reason`` (or ``note``); the reason of a target that is not met is listed in the
summary.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import monai
import torch

from medzoo.utils.tables import render

__all__ = ["interleaved", "machine_description", "format_table", "row_targets", "write_benchmarks_md",
           "read_section_targets", "HEADER"]

HEADER = ("# Benchmarks\n\nWritten by `python tools/bench.py SUITE --write`. "
          "Every figure is a ratio of medians measured side by side in one run (interleaved A/B); absolute times are "
          "for orientation only on a shared CPU.\n")
_TARGET_RE = re.compile(r"^\s*(<=|>=|<|>)\s*([0-9.]+)\s*x?\s*$")


def interleaved(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int = 11,
                warmup: int = 1) -> dict[str, float]:
    """Time ``fn_a`` and ``fn_b`` alternately; return median seconds of each and the median of ratios b/a.

    Example:
        >>> r = interleaved(lambda: sum(range(100)), lambda: sum(range(1000)), repeats=5)
        >>> sorted(r)
        ['a_s', 'b_s', 'ratio_b_over_a', 'repeats']
    """
    for _ in range(warmup):
        fn_a(), fn_b()
    ta, tb, ratios = [], [], []
    for i in range(repeats):
        order = ((fn_a, ta), (fn_b, tb)) if i % 2 == 0 else ((fn_b, tb), (fn_a, ta))
        for fn, sink in order:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)
        ratios.append(tb[-1] / ta[-1])
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb), "ratio_b_over_a": statistics.median(ratios),
            "repeats": repeats}


def machine_description() -> dict[str, str]:
    """CPU model, cores, memory, load average, Python, torch and MONAI versions, and whether CUDA is present.

    The load average tells how shared the machine was: above the core count, other processes took CPU time.
    """
    cpu = platform.processor() or "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", text)
        cpu = m.group(1).strip() if m else cpu
        flags = re.search(r"flags\s*:\s*(.+)", text)
        if flags:
            cpu += " (" + ", ".join(f for f in ("avx2", "avx512f", "amx_bf16") if f in flags.group(1).split()) + ")"
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, AttributeError):
        pass
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()), "memory": mem,
            "load average (1 min, at the end)": load,
            "python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows`` restricted to ``columns`` (:func:`medzoo.utils.tables.render`); floats keep 3
    significant digits, since benchmark figures span seconds to microseconds."""
    def cell(v: object) -> object:
        return f"{v:.3g}" if isinstance(v, float) else v
    return render(columns, [[cell(r.get(c)) for c in columns] for r in rows], style="markdown")


def _parse_target(target: Any) -> tuple[str, float] | None:
    if isinstance(target, bool):
        return None
    if isinstance(target, (int, float)):
        return ">=", float(target)
    m = _TARGET_RE.match(str(target))
    return (m.group(1), float(m.group(2))) if m else None


def _met(value: float, op: str, bound: float) -> bool:
    return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]


def _row_name(row: dict) -> str:
    if row.get("name"):
        return str(row["name"])
    parts = [str(row[k]) for k in ("figure", "phase", "mode", "n") if k in row]
    return " ".join(parts) or "row"


def row_targets(suite: str, row: dict) -> list[dict[str, Any]]:
    """The targets a row states: ``[{suite, figure, ratio, target, met, reason}]`` (empty for report-only rows).

    Example:
        >>> row_targets("x", {"name": "a", "ratio": 1.1, "target": "<= 1.05", "reason": "noise"})[0]["met"]
        False
    """
    found = []
    reason = str(row.get("reason") or row.get("note") or "")
    if "ratio" in row and _parse_target(row.get("target")) and isinstance(row["ratio"], (int, float)):
        found.append((_row_name(row), float(row["ratio"]), *_parse_target(row["target"])))
    for key in row:
        if key.startswith("target_vs_") and _parse_target(row[key]):
            suffix = key[len("target"):]
            values = [k for k in row if k.endswith(suffix) and k != key and isinstance(row[k], (int, float))]
            if values:
                found.append((f"{_row_name(row)} {values[0]}", float(row[values[0]]), *_parse_target(row[key])))
    return [{"suite": suite, "figure": name, "ratio": round(value, 3), "target": f"{op} {bound:g}",
             "met": _met(value, op, bound), "reason": reason} for name, value, op, bound in found]


def read_section_targets(text: str) -> list[dict[str, Any]]:
    """Every target recorded in BENCHMARKS.md text (the JSON comments that :func:`write_benchmarks_md` writes)."""
    out = []
    for m in re.finditer(r"<!-- targets: (\[.*?\]) -->", text):
        out.extend(json.loads(m.group(1)))
    return out


def _replace_section(text: str, name: str, body: str, at_top: bool = False) -> str:
    start, end = f"<!-- suite:{name} -->", f"<!-- /suite:{name} -->"
    section = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        return text[: text.index(start)] + section + text[text.index(end) + len(end):]
    if at_top and "<!-- suite:" in text:
        i = text.index("<!-- suite:")
        return text[:i] + section + "\n\n" + text[i:]
    return text.rstrip() + "\n\n" + section + "\n"


def _summary(targets: list[dict[str, Any]]) -> str:
    lines = ["## Summary: every target", "", format_table(targets, ["suite", "figure", "ratio", "target", "met"]), ""]
    missed = [t for t in targets if not t["met"]]
    lines += ["### Targets not met", ""]
    lines += [f"- {t['suite']}: {t['figure']}: measured {t['ratio']:g}, target {t['target']}. Reason: "
              f"{t['reason'] or 'not given by the suite'}" for t in missed] or ["None."]
    return "\n".join(lines) + "\n"


def write_benchmarks_md(path: Path, suite: str, body: str, targets: list[dict[str, Any]] | None = None) -> None:
    """Replace (or append) ``suite``'s section of BENCHMARKS.md, keeping the others, and refresh the summary.

    Args:
        path: the markdown file (created with a header when missing).
        suite: the section name.
        body: the section's markdown.
        targets: this suite's targets (see :func:`row_targets`); stored as a JSON comment in the section, so the
            summary at the top lists every suite's targets and the ones not met, whichever suite was written last.
    """
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    if targets is not None:
        body = body.rstrip() + f"\n\n<!-- targets: {json.dumps(targets)} -->"
    text = _replace_section(text, suite, body)
    text = _replace_section(text, "summary", _summary(read_section_targets(text)), at_top=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
