"""The CheXNet evaluation table: per-class AUROC with 95% bootstrap CIs beside the published values.

:func:`chexnet_table` evaluates a model on a run config's multilabel task and lays out per-class AUROC with 95%
bootstrap CIs beside the published CheXNet (Rajpurkar et al. 2017) and Wang et al. 2017 values;
:func:`format_chexnet_table` prints it (the one formatter of that layout), with the published columns labelled
"published, different data" when the run used the synthetic corpus.

Example:
    >>> from medzoo.train.config import load_run_config
    >>> run = load_run_config("configs/experiments/cxr14_chexnet.yaml", ["data_root=data/synth"])  # doctest: +SKIP
    >>> rows, text = chexnet_report(run, "runs/cxr14_chexnet/best.pt")  # doctest: +SKIP
    >>> print(text)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from medzoo.config import ConfigError
from medzoo.data.collate import collate
from medzoo.evaluation.tables import BOOTSTRAP_UNITS, auroc_ci_table
from medzoo.train.config import RunConfig
from medzoo.train.data import build_datasets
from medzoo.train.evaluate import move_batch
from medzoo.utils.device import resolve_device
from medzoo.utils.tables import format_cell, render
from medzoo.zoo.resolver import resolve

__all__ = ["PUBLISHED_CHEXNET", "PUBLISHED_WANG2017", "chexnet_report", "chexnet_table", "collect_scores",
           "format_chexnet_table", "is_synthetic_corpus"]

# Headline numbers: CheXNet (arXiv 1711.05225, Table) and Wang et al. 2017
# (arXiv 1705.02315, 14-class version), per-class AUROC on NIH ChestX-ray14 with their own splits.
PUBLISHED_CHEXNET = {
    "Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345, "Mass": 0.8676,
    "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887, "Consolidation": 0.7901, "Edema": 0.8878,
    "Emphysema": 0.9371, "Fibrosis": 0.8047, "Pleural_Thickening": 0.8062, "Hernia": 0.9164, "Mean": 0.841,
}
PUBLISHED_WANG2017 = {
    "Atelectasis": 0.716, "Cardiomegaly": 0.807, "Effusion": 0.784, "Infiltration": 0.609, "Mass": 0.706,
    "Nodule": 0.671, "Pneumonia": 0.633, "Pneumothorax": 0.806, "Consolidation": 0.708, "Edema": 0.835,
    "Emphysema": 0.815, "Fibrosis": 0.769, "Pleural_Thickening": 0.708, "Hernia": 0.767, "Mean": 0.738,
}


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())



def is_synthetic_corpus(data_root: str | Path) -> bool:
    """True when ``data_root`` holds the ``corpus.json`` that ``medzoo synth`` writes."""
    marker = Path(data_root).expanduser() / "corpus.json"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("format") == "medzoo-synthetic-corpus"
    except (OSError, ValueError, AttributeError):
        return False


def _multilabel_task(run: RunConfig, task: str | None) -> str:
    tasks = [t for t, tc in run.model.tasks.items() if tc.type == "multilabel"]
    if task is None:
        if len(tasks) != 1:
            raise ConfigError(f"model.tasks: give the multilabel task for the CheXNet table; multilabel tasks: {tasks}")
        return tasks[0]
    if task not in tasks:
        raise ConfigError(f"{task!r} is not a multilabel task of the config; multilabel tasks: {tasks}")
    return task


def _patients(batch: dict[str, Any], kind: str, n: int, start: int) -> list[tuple[str, str]]:
    """``(dataset kind, patient_id)`` per image of a batch; the image id, else its position, when meta lacks it."""
    metas = batch.get("meta") or [{}] * n
    return [(kind, str(m.get("patient_id") or m.get("id") or f"#{start + i}")) for i, m in enumerate(metas)]


def _collect(run: RunConfig, checkpoint: str | Path, task: str | None, split: str,
             device: str | None) -> tuple[np.ndarray, np.ndarray, list, list[tuple[str, str]]]:
    """:func:`collect_scores` plus each image's patient as ``(dataset kind, patient_id)`` from the sample meta."""
    task = _multilabel_task(run, task)
    model = resolve(checkpoint).model
    dev = resolve_device(device or run.train.device)
    model.to(dev).eval()
    scores, targets, patients = [], [], []
    for bundle in build_datasets(run, model):
        ds = bundle.splits.get(split)
        if ds is None or task not in bundle.mapping.sources.values():
            continue
        loader = DataLoader(ds, batch_size=bundle.config.eval_batch_size or bundle.config.batch_size,
                            shuffle=False, collate_fn=collate)
        with torch.no_grad():
            for batch in loader:
                batch = move_batch(batch, dev)
                y = bundle.mapping.targets(batch, bundle.name).get(task)
                if y is not None:
                    scores.append(model(batch["image"], tasks=[task])[task].float().sigmoid().cpu().numpy())
                    targets.append(y.float().cpu().numpy())
                    patients += _patients(batch, str(bundle.config.kind), len(y), len(patients))
    if not scores:
        raise ValueError(f"no dataset of the config has {split!r} images labelled for task {task!r}")
    return np.concatenate(scores), np.concatenate(targets), list(model.heads[task].label_names), patients


def collect_scores(run: RunConfig, checkpoint: str | Path, task: str | None = None, split: str = "test",
                   device: str | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """Per-image probabilities and targets of a multilabel task on ``split`` of every dataset that labels it.

    Args:
        run: the run config whose datasets are read.
        checkpoint: a model reference (:func:`medzoo.zoo.resolve`), usually a Trainer checkpoint.
        task: the multilabel task (default: the config's only one).
        split: ``train``, ``val`` or ``test``.
        device: where the model runs (default: ``train.device``).

    Returns:
        ``(scores [N, L], targets [N, L] with NaN = unknown, label names)``.

    Raises:
        ValueError: no dataset of the config has images of ``split`` labelled for the task.
    """
    return _collect(run, checkpoint, task, split, device)[:3]


def chexnet_table(run: RunConfig, checkpoint: str | Path, task: str | None = None, split: str = "test",
                  n_boot: int = 1000, seed: int = 0, device: str | None = None,
                  unit: str = "patient") -> list[dict[str, Any]]:
    """Per-class AUROC with 95% bootstrap CIs beside the published CheXNet and Wang et al. 2017 values.

    Args:
        run: the run config (its datasets and model tasks).
        checkpoint: a model reference: a Trainer checkpoint, an export folder...
        task: the multilabel task (default: the config's only one).
        split: ``train``, ``val`` or ``test``.
        n_boot, seed: bootstrap resamples and their seed.
        unit: ``"patient"`` (default) resamples patients with all their images (NIH has 3.64 images per
            patient, which are not independent); ``"image"`` resamples images.

    Returns:
        Rows ``{"label", "auroc", "ci_lower", "ci_upper", "n_pos", "n_neg", "bootstrap_unit", "n_units",
        "chexnet", "wang2017"}``, one per head label in the head's order, then ``Mean``; a published value is NaN
        for a label the papers do not report.
    """
    if unit not in BOOTSTRAP_UNITS:
        raise ValueError(f"bootstrap unit must be one of {BOOTSTRAP_UNITS}, got {unit!r}")
    scores, targets, labels, patients = _collect(run, checkpoint, task, split, device)
    rows = auroc_ci_table(scores, targets, labels, n_boot=n_boot, seed=seed,
                          groups=patients if unit == "patient" else None)
    chexnet = {_key(k): v for k, v in PUBLISHED_CHEXNET.items()}
    wang = {_key(k): v for k, v in PUBLISHED_WANG2017.items()}
    for r in rows:
        r["chexnet"] = float(chexnet.get(_key(r["label"]), math.nan))
        r["wang2017"] = float(wang.get(_key(r["label"]), math.nan))
    return rows


def format_chexnet_table(rows: Sequence[Mapping[str, Any]], synthetic: bool = False, digits: int = 3) -> str:
    """Markdown in the CheXNet layout: ``| Pathology | AUROC (95% CI) |``, cells like ``0.812 (0.790-0.833)``.

    Rows from :func:`chexnet_table` (which carry the published values) add ``n+ / n-`` and the published CheXNet and
    Wang et al. 2017 columns, with a note under the table. With ``synthetic`` those columns read "published,
    different data": the figures beside them come from the synthetic corpus and are not comparable. Otherwise they
    read "published; their split", since neither paper used the official ``test_list.txt``. Rows of
    :func:`~medzoo.evaluation.tables.auroc_ci_table` alone give the two-column table. Rows that carry
    ``bootstrap_unit`` get a line under the table naming what the CIs resampled (patients or images) and how many.
    """
    published = bool(rows) and all("chexnet" in r for r in rows)
    tag = "published, different data" if synthetic else "published; their split"
    header = ["Pathology", "AUROC (95% CI)"]
    if published:
        header += ["n+ / n-", f"CheXNet 2017 ({tag})", f"Wang et al. 2017 ({tag})"]
    body = []
    for r in rows:
        name = str(r["label"]).replace("_", " ") if published else str(r["label"])
        ci = f"{format_cell(r['auroc'], digits)} ({format_cell(r['ci_lower'], digits)}-" \
             f"{format_cell(r['ci_upper'], digits)})"
        cells = [name, ci]
        if published:
            cells += [f"{r['n_pos']} / {r['n_neg']}", format_cell(r["chexnet"], 4 if name != "Mean" else 3),
                      format_cell(r["wang2017"], 3)]
        body.append(cells)
    table = render(header, body, style="markdown") + "\n" + _unit_note(rows)
    if not published:
        return table
    note = ("Measured on the medzoo synthetic corpus: the published columns (CheXNet, arXiv 1711.05225; Wang et al., "
            "arXiv 1705.02315, 14-class version) come from NIH ChestX-ray14 and are not comparable."
            if synthetic else "Published columns: CheXNet (arXiv 1711.05225) and Wang et al. (arXiv 1705.02315), "
            "each on its own split of NIH ChestX-ray14, not the official test list.")
    return table + "\n" + note + "\n"


def _unit_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """A line naming what the CIs resampled, when the rows say (:func:`~medzoo.evaluation.tables.auroc_ci_table`)."""
    if not rows or "bootstrap_unit" not in rows[0]:
        return ""
    unit, n = rows[0]["bootstrap_unit"], rows[0]["n_units"]
    how = ("each drawn patient brings all of its images" if unit == "patient"
           else "images of one patient resampled as if independent")
    return f"\n95% CIs: percentile bootstrap over {n} {unit}s ({how}).\n"


def chexnet_report(run: RunConfig, checkpoint: str | Path, split: str = "test", n_boot: int = 1000,
                   task: str | None = None, device: str | None = None,
                   unit: str = "patient") -> tuple[list[dict], str]:
    """``(rows, markdown)`` of :func:`chexnet_table` for ``medzoo evaluate --table chexnet``.

    The published columns are labelled "published, different data" when the config's ``data_root`` is the synthetic
    corpus (see :func:`is_synthetic_corpus`).
    """
    rows = chexnet_table(run, checkpoint, task=task, split=split, n_boot=n_boot, device=device, unit=unit)
    return rows, format_chexnet_table(rows, synthetic=is_synthetic_corpus(run.data_root))
