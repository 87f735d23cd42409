"""Suite ``train``: the end-to-end fine-tuning step against the model-only step (target <= 1.1x).

End to end is what ``medzoo finetune`` runs: a :class:`~medzoo.train.trainer.Trainer` whose DataLoader (2 persistent
workers, the default prefetch of 2 batches per worker) reads a prepared cache (:func:`medzoo.data.prepared.prepare`,
written by the Trainer from a generic ``csv`` dataset), then forward, loss, backward and an AdamW step. Model-only is
``Trainer.train_step`` on one batch already in memory: the same compute with no data loading. Inputs: chest X-rays
at 224^2 (the ``cxr`` preset) and CT volumes cropped to 96^3 (the ``ct`` preset); resnet10 at full width (a small
encoder makes the data side weigh more than resnet18/50 would).

Each repeat times a block of end-to-end steps, a block of model-only steps and a second model-only block (an A/A
control: its ratio to the first shows the machine's noise), rotating their order; a ratio is the median of the
per-repeat ratios. Every end-to-end block starts with as many untimed steps as the
loader holds prefetched batches (workers x prefetch), so a timed block does not consume batches prepared while the
model-only block ran. A row also gives the loader's throughput alone (batches/s with no training) times the
model-only step time: above 1, the workers produce batches faster than the step consumes them, and any excess of
the ratio over 1 is CPU contention (workers and the step share the cores).

Run: ``python tools/bench.py train [--quick] [--write]``.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.data.imageio import write_nifti, write_png
from medzoo.train.trainer import Trainer

__all__ = ["bench_train"]

log = logging.getLogger("bench_train")
TARGET = "<= 1.1"
WORKERS, PREFETCH = 2, 2


def _write_set(root: Path, kind: str, n: int) -> Path:
    """``n`` synthetic images (CXR: 256^2 PNG; CT: 112^3 int16 NIfTI) and a labels.csv naming them."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,patient,label"]
    for i in range(n):
        if kind == "cxr":
            name = f"cxr_{i:03d}.png"
            write_png(root / name, rng.integers(0, 256, (256, 256), dtype=np.uint8))
        else:
            name = f"ct_{i:03d}.nii.gz"
            write_nifti(root / name, rng.integers(-1000, 400, (112, 112, 112)).astype(np.int16), np.eye(4),
                        compresslevel=1)
        rows.append(f"{name},p{i},{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def _config(kind: str, csv: Path, work: Path, batch: int) -> dict[str, Any]:
    transform = ({"preset": "cxr", "size": [224], "augment": False} if kind == "cxr" else
                 {"preset": "ct", "size": [96], "augment": False, "options": {"spacing": None}})
    data = {"name": kind, "kind": "csv", "root": str(csv), "tasks": {"label": "label"}, "transform": transform,
            "options": {"image_col": "path", "label_cols": ["label"], "task": "label", "type": "class",
                        "classes": ["0", "1"], "patient_col": "patient"},
            "split": {"official": False, "fractions": {"train": 0.9, "val": 0.1}}, "batch_size": batch,
            "cache": str(work / "cache")}
    level = "image" if kind == "cxr" else "volume"
    return {"model": {"encoder": {"name": "resnet10"},
                      "tasks": {"label": {"type": "classification", "level": level, "num_classes": 2}}},
            "data": [data], "output": {"dir": str(work / "run"), "tensorboard": False},
            "train": {"epochs": 1000, "optimizer": "adamw", "lr": 1e-4, "device": "cpu", "seed": 0,
                      "num_workers": WORKERS, "prefetch_factor": PREFETCH}}


def _batches(trainer: Trainer) -> Iterator[tuple[int, dict]]:
    return itertools.chain.from_iterable(trainer.loader.epoch(e) for e in itertools.count())


def _timed(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _measure(trainer: Trainer, repeats: int, block: int) -> dict[str, float]:
    """Median seconds per step of the three blocks (end to end, model-only, model-only again as an A/A control of
    the machine's noise), run in an order rotated per repeat; the ratios are medians of per-repeat ratios."""
    stream = _batches(trainer)
    fixed = next(stream)
    warm = WORKERS * PREFETCH

    def e2e() -> float:
        for _ in range(warm):
            trainer.train_step([next(stream)])
        return _timed(lambda: trainer.train_step([next(stream)]), block)

    def model() -> float:
        return _timed(lambda: trainer.train_step([fixed]), block)

    e2e(), model()  # warm-up: workers started, caches in the page cache, allocator settled
    blocks = [e2e, model, model]
    times: list[list[float]] = [[], [], []]
    for r in range(repeats):
        for k in [(r + j) % 3 for j in range(3)]:
            times[k].append(blocks[k]())
    loader = _timed(lambda: next(stream), 4 * block)
    return {"ratio": statistics.median(a / b for a, b in zip(times[0], times[1])),
            "control": statistics.median(c / b for c, b in zip(times[2], times[1])),
            "e2e": statistics.median(times[0]), "model": statistics.median(times[1]), "loader": loader}


def _row(kind: str, batch: int, m: dict[str, float], repeats: int) -> dict[str, Any]:
    size = "224^2" if kind == "cxr" else "96^3"
    capacity = m["model"] / m["loader"]
    row = {"suite": "train", "name": f"{kind} {size} fine-tuning step: Trainer + DataLoader (prepared cache, "
                                     f"{WORKERS} workers) vs model-only step",
           "ratio": round(m["ratio"], 3), "target": TARGET, "model": f"resnet10, batch {batch}, AdamW, fp32, CPU",
           "e2e s/step": round(m["e2e"], 3), "model-only s/step": round(m["model"], 3),
           "A/A control (model-only / model-only)": round(m["control"], 3),
           "loader alone batches/s": round(1.0 / m["loader"], 1), "loader capacity / step rate": round(capacity, 1),
           "repeats": repeats}
    if m["ratio"] > 1.1:
        side = "faster" if capacity > 1 else "slower"
        row["reason"] = (f"the loader alone is {side} than the step; compare the A/A control "
                         f"{m['control']:.2f} of two identical model-only blocks (the noise of a shared machine)")
    log.info("%s", row)
    return row


def bench_train(quick: bool = True, workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows ``{suite, name, ratio, target, model, e2e s/step, model-only s/step, loader ..., repeats}``.

    Args:
        quick: 3 repeats of 2-step blocks, CXR batch 4 / CT batch 1 (instead of 5 repeats of 3-step blocks, CXR
            batch 8 / CT batch 2).
        workdir: where to write the synthetic sets and caches (default: a temporary folder, removed afterwards).
    """
    repeats, block = (3, 2) if quick else (5, 3)
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="medzoo-bench-train-"))
    rows = []
    try:
        for kind, batch, n in (("cxr", 4 if quick else 8, 48), ("ct", 1 if quick else 2, 12)):
            csv = _write_set(tmp / kind / "data", kind, n)
            trainer = Trainer(_config(kind, csv, tmp / kind, batch), quiet=True)
            rows.append(_row(kind, batch, _measure(trainer, repeats, block), repeats))
            del trainer
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows
