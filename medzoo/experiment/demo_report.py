"""``report.md`` of ``medzoo demo``: pretraining metrics, the zoo entry, the held-out task's tables and generated
sentences, the plots, how the numbers are kept identical across machines' thread counts, and the run's timing.

Everything above the "Timing of this run" heading is a function of the results alone; the timing section is not
(it is the only part that changes between two runs of the same profile).

Example:
    >>> write_report(out, exp, pre, zoo, run)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from medzoo.experiment.report import markdown_table, paired_table
from medzoo.utils.tables import render

__all__ = ["TIMING_HEADING", "machine", "paired_text", "write_report"]

TIMING_HEADING = "## Timing of this run"
_PRETRAIN_KEYS = ("test/ct_seg/mean_dice", "test/covid_ct/accuracy", "test/covid_ct/auroc", "test/findings/mean_auroc")


def machine() -> dict[str, Any]:
    """CPU model, usable cores, memory, OS and library versions of this machine."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem = float("nan")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "memory_gib": mem, "os": platform.system(),
            "python": platform.python_version(), "torch": torch.__version__}


def paired_text(exp: Any) -> str:
    """The plain-text paired-difference table of every task."""
    tasks = list(dict.fromkeys(p["task"] for p in exp.paired))
    return "\n\n".join(paired_table(exp.paired, t, "text") for t in tasks)


def _settings(run: dict[str, Any], exp: Any) -> str:
    s = run["settings"]
    n_test = next((r["n_test"] for r in exp.rows if "n_test" in r), "?")
    n_seeds = max(x["n"] for x in exp.summary)
    return (f"Profile `{run['profile']}`: {s['corpus']} synthetic corpus, resnet10 widths {list(s['widths'])}, CXRs at "
            f"{s['cxr_px']} px; {s['pretrain_steps']} pretraining steps; {s['finetune_steps']} fine-tuning steps per "
            f"run (lr {s['finetune_lr']:g}); fractions {list(s['fractions'])}; {n_seeds} seeds; {n_test} test images.")


def _held_out(exp: Any) -> list[str]:
    task = exp.summary[0]["task"]
    metric = exp.summary[0]["metric"]
    lines = [f"Test Dice of the lung class (`{metric}`), mean ± std over seeds. Each seed draws its own training "
             "subset at each fraction; `scratch` and `zoo` fine-tune every weight for the same number of steps. "
             "Rows marked baseline train no network: `threshold` is an intensity band + connected components with "
             "its settings tuned on the same training images; `zoo_probe` and `random_probe` are closed-form linear "
             "probes (ridge regression per pixel) on the frozen zoo encoder and on a randomly initialised one.", "",
             markdown_table(exp.summary, task), "",
             "Paired differences against `scratch` (same seed, training subset and test set): mean "
             "[95% t interval over seeds] and the number of seeds on which the row is higher.", "",
             paired_table(exp.paired, task, "markdown"), "", "What these numbers support (generated from them):", "",
             *[f"- {c}" for c in exp.claims], ""]
    for kind, caption in (("fraction", "metric vs data fraction"), ("paired", "paired differences"),
                          ("curves", "learning curves")):
        if f"{kind}:{task}" in exp.files:
            lines += [f"![{caption}](experiment/{Path(exp.files[f'{kind}:{task}']).name})", ""]
    return lines


def _timing(run: dict[str, Any]) -> list[str]:
    secs = run["seconds"]
    rows = [[k, float(v)] for k, v in secs.items()]
    load = run.get("load_average", float("nan"))
    busy = run.get("busy")
    m = machine()
    return [TIMING_HEADING, "",
            f"{run['workers']} single-thread worker(s) on {m['cpu']} ({m['cores']} usable cores, {m['memory_gib']} "
            f"GiB); 1-minute load average at the start {load:.2f}." + (f" Warning: {busy}." if busy else ""), "",
            render(["step", "seconds"], rows, style="markdown", digits=1), ""]


def write_report(out: Path, exp: Any, pre: dict[str, float], zoo: dict[str, Any], run: dict[str, Any]) -> Path:
    """Write ``out/report.md``; returns its path."""
    pre_rows = [[f"`{k}`", float(pre[k])] for k in _PRETRAIN_KEYS if k in pre]
    lines = [
        "# medzoo demo report", "", _settings(run, exp), "",
        "## 1. Pretraining (one encoder, three tasks)", "",
        render(["test metric", "value"], pre_rows, style="markdown", digits=3), "",
        "## 2. Zoo", "",
        f"Encoder exported and published as `{zoo['name']}` (sha256 `{zoo['sha256']}`) in the demo's local "
        "catalog, then loaded back by name through the catalog.", "",
        "## 3. Held-out task: CXR lung segmentation (Montgomery-style set)", "", *_held_out(exp),
        "## 4. Same numbers whatever the thread count", "",
        "Every training cell, baseline and the pretraining run on one torch thread with deterministic algorithms "
        "(`torch.set_num_threads(1)`, `torch.use_deterministic_algorithms(True)`), whatever `OMP_NUM_THREADS` says; "
        "the cores are used by running cells side by side in worker processes. A different CPU type can still "
        "change low-order digits, since the math libraries choose kernels by instruction set.", "",
        *_timing(run)]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
