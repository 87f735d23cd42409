"""Shared benchmark helpers: interleaved A/B timing, the machine description, and the BENCHMARKS.md writer.

Figures are ratios measured side by side in one run (the machine is shared and noisy): each repeat times A then B
(alternating the order), and a ratio is the median of per-repeat ratios.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["interleaved", "machine_description", "write_benchmarks_md", "format_table"]


def interleaved(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int = 11,
                warmup: int = 1) -> dict[str, float]:
    """Time ``fn_a`` and ``fn_b`` alternately; return median seconds of each and the median of ratios b/a."""
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
    """CPU model, cores, memory, Python, torch and MONAI versions, and whether CUDA is present."""
    import monai
    import torch

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
    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()), "memory": mem,
            "python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain markdown table of ``rows`` restricted to ``columns``."""
    def cell(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_benchmarks_md(path: Path, suite: str, body: str) -> None:
    """Replace (or append) the section of ``suite`` in BENCHMARKS.md, keeping the other suites' sections."""
    start, end = f"<!-- suite:{suite} -->", f"<!-- /suite:{suite} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `python tools/bench.py SUITE --write`.\n"
    section = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
