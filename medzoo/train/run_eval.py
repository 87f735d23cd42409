"""Evaluate a checkpoint on the datasets of a run config (``medzoo evaluate``).

- :func:`evaluate_checkpoint`: metrics, and with ``return_predictions`` the per-sample
  :class:`~medzoo.train.evaluate.TaskPredictions` of every non-dense task;
- :func:`ensemble_predictions` / :func:`ensemble_metrics`: several checkpoints' probabilities averaged per task over
  the tasks and labels they share (DECISIONS 19; Wehbe et al. 2020);
- :func:`bootstrap_tables`: AUROC with bootstrap 95% CIs per label (the CheXNet layout), and COVIDx-CT at slice and
  patient level (:mod:`medzoo.infer.evaluate`);
- :func:`localization_tables`: CAM / Grad-CAM heatmaps against the boxes of NIH ChestX-ray14 or VinDr-CXR.

Example:
    >>> metrics = evaluate_checkpoint("configs/experiments/finetune_tb.yaml", "runs/tb/best.pt")  # doctest: +SKIP
    >>> metrics["test/tb/accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.train.config import RunConfig, load_run_config
from medzoo.train.evaluate import TaskPredictions, prediction_metrics

__all__ = ["bootstrap_tables", "ensemble_metrics", "ensemble_predictions", "evaluate_checkpoint", "localization_tables",
           "metrics_rows"]

log = logging.getLogger(__name__)


def evaluate_checkpoint(cfg: RunConfig | str | Path | dict, checkpoint: str | Path, split: str = "test",
                        overrides: Sequence[str] = (), device: str | None = None,
                        return_predictions: bool = False) -> Any:
    """Metrics of a checkpoint's model on ``split`` of the config's datasets.

    Args:
        cfg: the run config (its ``data`` and ``train.loss``); the model is rebuilt from the checkpoint's own config.
        checkpoint: a Trainer checkpoint (``best.pt``, ``last.pt``) or an export directory.
        split: ``train``, ``val`` or ``test``.
        overrides: ``--set`` overrides of ``cfg``.
        device: ``cpu``, ``cuda``... (default: ``train.device``).
        return_predictions: also return the per-sample predictions.

    Returns:
        ``{"<split>/<task>/<metric>": value}`` (see :mod:`medzoo.train.evaluate`); with ``return_predictions``,
        ``(metrics, {task: TaskPredictions})`` (dense tasks have metrics only).

    Raises:
        CheckpointError: an unreadable checkpoint.
        ConfigError: a config whose tasks the checkpoint's model lacks.
    """
    from medzoo.config import ConfigError
    from medzoo.data.collate import collate
    from medzoo.models import create_model
    from medzoo.train.class_weights import resolve_pos_weight
    from medzoo.train.data import build_datasets
    from medzoo.train.evaluate import evaluate
    from medzoo.train.objective import Objective
    from medzoo.utils.device import resolve_device as _device
    from medzoo.zoo.checkpoint import model_from_checkpoint

    run = resolve_pos_weight(cfg if isinstance(cfg, RunConfig) and not overrides else load_run_config(cfg, overrides))
    path = Path(checkpoint)
    model = create_model(path) if path.is_dir() else model_from_checkpoint(path)[0]
    missing = sorted(set(run.model.tasks) - set(model.tasks))
    if missing:
        raise ConfigError(f"{path}: the checkpoint's model has no task(s) {missing}; it has {model.tasks}")
    dev = _device(device or run.train.device)
    model.to(dev)
    bundles = build_datasets(run, model)
    objective = Objective(run.model, run.train.loss).to(dev)
    with torch.no_grad():
        metrics, _, preds = evaluate(model, bundles, split, objective, dev, collate, return_predictions=True)
    if not metrics:
        raise ValueError(f"no dataset of the config has a {split!r} split")
    log.info("evaluated %s on %s: %d metrics", path, split, len(metrics))
    return (metrics, preds) if return_predictions else metrics


def metrics_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """``(split, task, metric, value)`` rows of a flat metrics dict, sorted by task then metric."""
    rows = []
    for key, value in metrics.items():
        parts = key.split("/")
        task, metric = ("", parts[-1]) if len(parts) <= 2 else (parts[1], "/".join(parts[2:]))
        rows.append((parts[0], task, metric, float(value)))
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


# ---------------------------------------------------------------------------------------------------- ensembles
_TYPES = {"class": "classification", "vector": "multilabel", "regression": "regression"}


def _remap_classes(y: np.ndarray, labels: Sequence[str], common: Sequence[str]) -> np.ndarray:
    """Class indices over ``labels`` -> indices over ``common`` (NaN for a class outside it)."""
    pos = {i: float(common.index(lab)) if lab in common else np.nan for i, lab in enumerate(labels)}
    return np.array([np.nan if np.isnan(v) else pos[int(v)] for v in y], dtype=np.float64)


def _mean_over(parts: Sequence[np.ndarray], kind: str, renorm: bool) -> np.ndarray:
    out = sum(p.astype(np.float64) for p in parts) / len(parts)
    return out / out.sum(axis=1, keepdims=True) if kind == "class" and renorm else out


def ensemble_predictions(members: Sequence[Mapping[str, TaskPredictions]]) -> dict[str, TaskPredictions]:
    """Average the members' probabilities per task over the tasks (same type) and labels every member has.

    A classification task restricted to fewer classes than the first member has is renormalised, and its targets of
    the left-out classes become unknown (NaN). Members must have predicted the same samples in the same order.

    Args:
        members: per checkpoint, ``{task: TaskPredictions}`` (:func:`evaluate_checkpoint` with
            ``return_predictions``).

    Returns:
        ``{task: TaskPredictions}`` over the common labels (the first member's order).

    Raises:
        EnsembleError: no task with a label common to all members.
        ValueError: members evaluated different samples.

    Example:
        >>> # ensemble_predictions([evaluate_checkpoint(c, a, return_predictions=True)[1], ...])
    """
    from medzoo.infer.ensemble import shared_tasks

    common = shared_tasks([{t: (_TYPES[p.kind], p.labels) for t, p in m.items()} for m in members])
    out = {}
    for task, labels in common.items():
        preds = [m[task] for m in members]
        first = preds[0]
        for i, p in enumerate(preds[1:], 1):
            if p.ids != first.ids or (p.slice_series or []) != (first.slice_series or []):
                raise ValueError(f"task {task!r}: ensemble member {i} evaluated other samples than member 0 "
                                 f"({len(p.ids)} vs {len(first.ids)}); use one config and split for all members")
        idx = [[p.labels.index(lab) for lab in labels] for p in preds]
        renorm = len(labels) < len(first.labels)
        scores = _mean_over([p.scores[:, j] for p, j in zip(preds, idx)], first.kind, renorm)
        if first.kind == "class":
            targets = _remap_classes(first.targets, first.labels, labels)
        else:
            targets = first.targets[:, idx[0]]
        fields: dict[str, Any] = {"slice_scores": None, "slice_targets": None, "slice_series": None}
        if all(p.slice_scores is not None for p in preds):
            fields = {"slice_scores": _mean_over([p.slice_scores[:, j] for p, j in zip(preds, idx)], "class", renorm),
                      "slice_targets": _remap_classes(first.slice_targets, first.labels, labels),
                      "slice_series": first.slice_series}
        out[task] = replace(first, labels=tuple(labels), scores=scores, targets=targets, **fields)
    return out


def ensemble_metrics(preds: Mapping[str, TaskPredictions], split: str) -> dict[str, float]:
    """``{"<split>/<task>/<metric>": value}`` of (ensemble) predictions, as :func:`evaluate_checkpoint` keys them."""
    return {f"{split}/{task}/{k}": v for task, p in preds.items() for k, v in prediction_metrics(p).items()}


# ---------------------------------------------------------------------------------------------------- bootstrap
def bootstrap_tables(preds: Mapping[str, TaskPredictions], n_boot: int = 1000,
                     seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """AUROC tables with percentile-bootstrap 95% CIs.

    - multilabel task -> ``<task>_auroc_ci``: one row per label plus ``Mean`` (:func:`medzoo.infer.evaluate.
      auroc_ci_table`, the CheXNet layout);
    - COVIDx-CT classification -> ``<task>_slice`` and ``<task>_patient`` (:func:`~medzoo.infer.evaluate.
      covidx_ct_tables`): a slice model's probabilities are averaged per patient; a series model's patient level is
      its aggregator output, its slice level the same head on each slice (DECISIONS 19);
    - other classification -> ``<task>_auroc_ci``, one-vs-rest per class.

    Regression tasks have no AUROC and are left out (logged).
    """
    from medzoo.infer.evaluate import auroc_ci_table, covidx_ct_tables
    from medzoo.metrics import one_hot_targets

    tables: dict[str, list[dict[str, Any]]] = {}
    for task, p in preds.items():
        labels = list(p.labels)
        if p.kind == "regression":
            log.info("bootstrap: task %r is a regression; no AUROC table", task)
        elif p.kind == "vector":
            tables[f"{task}_auroc_ci"] = auroc_ci_table(p.scores, p.targets, labels, n_boot=n_boot, seed=seed)
        elif "covidx-ct" not in p.datasets:
            tables[f"{task}_auroc_ci"] = auroc_ci_table(p.scores, one_hot_targets(p.targets, len(labels)), labels,
                                                        n_boot=n_boot, seed=seed)
        elif p.level != "series":  # a slice model: slice probabilities averaged per patient
            tables.update({f"{task}_{lvl}": rows for lvl, rows in covidx_ct_tables(
                p.patients, p.scores, p.targets, labels, n_boot=n_boot, seed=seed).items()})
        else:  # a series model: each series is one patient-level sample
            if p.slice_scores is not None:
                keys = [f"{s}#{i}" for i, s in enumerate(p.slice_series)]
                tables[f"{task}_slice"] = covidx_ct_tables(keys, p.slice_scores, p.slice_targets, labels,
                                                           n_boot=n_boot, seed=seed)["slice"]
            tables[f"{task}_patient"] = covidx_ct_tables(p.ids, p.scores, p.targets, labels, n_boot=n_boot,
                                                         seed=seed)["patient"]
    return tables


# ------------------------------------------------------------------------------------------------ localisation
def _contract(run: RunConfig, task: str, ref: str | Path) -> dict[str, Any]:
    """The input contract of ``ref`` for ``task``: an export dir's ``metadata.json``, else the run config's
    preprocessing of the first dataset that labels ``task`` (CXR preset: [0, 1] by bit depth, resized)."""
    meta = Path(ref) / "metadata.json"
    if meta.is_file():
        pre = json.loads(meta.read_text(encoding="utf-8")).get("preprocessing")
        if pre:
            return dict(pre)
    for d in run.data:
        if task in d.tasks.values() and d.transform.size:
            size = [int(s) for s in d.transform.size]
            return {"normalisation": "none", "input_size": size * 2 if len(size) == 1 else size[-2:]}
    return {"normalisation": "none"}


def _load_model(ref: str | Path) -> Any:
    from medzoo.models import create_model
    from medzoo.zoo.checkpoint import model_from_checkpoint

    path = Path(ref)
    return create_model(path) if path.is_dir() else model_from_checkpoint(path)[0]


def _label_map(box_labels: set[str], labels: Sequence[str]) -> dict[str, str]:
    """Dataset box label -> model label, matched exactly or through the harmonised vocabulary."""
    from medzoo.data.labels import canonical_label

    out = {}
    for b in box_labels:
        hits = [lab for lab in labels if lab == b or (canonical_label(lab) or lab) == (canonical_label(b) or b)]
        if hits:
            out[b] = hits[0]
    return out


NIH_BOX_SPACE = 1024.0  # NIH BBox_List_2017.csv boxes are in the 1024-px space of the released PNGs


def _nih_boxes_in_pixels(records: Sequence[Any]) -> list[Any]:
    """NIH records whose boxes are rescaled from the 1024-px space to each image's own size (equal for the released
    1024-px PNGs; downsized copies need it)."""
    from PIL import Image

    out = []
    for rec in records:
        with Image.open(rec.image) as im:
            w, h = im.size
        sx, sy = w / NIH_BOX_SPACE, h / NIH_BOX_SPACE
        boxes = [{**b, "box": (b["box"][0] * sx, b["box"][1] * sy, b["box"][2] * sx, b["box"][3] * sy)}
                 for b in rec.meta["boxes"]]
        out.append(replace(rec, meta={**rec.meta, "boxes": boxes}))
    return out


def localization_tables(cfg: RunConfig | str | Path | dict, refs: Sequence[str | Path], kind: str, root: str | Path,
                        task: str = "findings", method: str = "gradcam", ks: Sequence[float] = (5, 10, 20, 50),
                        overrides: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """Heatmaps of ``task`` scored against the boxes of a NIH ChestX-ray14 or VinDr-CXR dataset.

    Every record with boxes is explained once per boxed label the model has (box labels are matched to the model's
    labels exactly or through :func:`medzoo.data.labels.canonical_label`). With several ``refs`` the heatmap is the
    mean of the members' min-max normalised heatmaps.

    Args:
        cfg: the run config (the input contract of a training checkpoint comes from its data entries).
        refs: checkpoints or export dirs (one, or an ensemble).
        kind: ``nih-cxr14`` or ``vindr-cxr``.
        root: the dataset folder (NIH: with ``BBox_List_2017.csv``; its 1024-px boxes are rescaled to each PNG's
            size; VinDr boxes are in the image's own pixels).
        task: the multilabel task to explain.
        method: ``cam`` or ``gradcam``.
        ks: top-k percentages for IoU and Dice.

    Returns:
        ``{"localization": one row per (image, label), "localization_summary": per label and "all", with IoBB hit
        rates at the ChestX-ray14 thresholds}``.

    Raises:
        ValueError: an unknown dataset kind or task, no boxed image, or no box label the model knows.
    """
    from medzoo.data import open_dataset
    from medzoo.infer.evaluate import boxes_by_label, evaluate_localization, localization_summary, model_heatmap_fn

    if kind not in ("nih-cxr14", "vindr-cxr"):
        raise ValueError(f"--localization: expected nih-cxr14 or vindr-cxr, got {kind!r}")
    run = cfg if isinstance(cfg, RunConfig) and not overrides else load_run_config(cfg, overrides)
    models = [_load_model(r) for r in refs]
    for ref, m in zip(refs, models):
        if task not in m.tasks:
            raise ValueError(f"{ref}: the model has no task {task!r} to localise; its tasks are {list(m.tasks)}")
    records = [r for r in open_dataset(kind, root) if boxes_by_label(r)]
    if not records:
        raise ValueError(f"{root}: the {kind} dataset has no image with boxes")
    if kind == "nih-cxr14":
        records = _nih_boxes_in_pixels(records)
    labels = [lab for lab in models[0].heads[task].label_names if all(lab in m.heads[task].label_names
                                                                       for m in models)]
    box_labels = {lab for r in records for lab in boxes_by_label(r)}
    label_map = _label_map(box_labels, labels)
    if not label_map:
        raise ValueError(f"{root}: no box label {sorted(box_labels)} matches a label of task {task!r} ({labels})")
    unmatched = sorted(box_labels - set(label_map))
    if unmatched:
        log.warning("localisation: boxes of %s have no label in task %r and are not scored", unmatched, task)
    fns = [model_heatmap_fn(m.eval(), task, method, _contract(run, task, ref)) for ref, m in zip(refs, models)]

    def heatmap(record: Any, label: str) -> np.ndarray:
        maps = [np.asarray(fn(record, label), dtype=np.float64) for fn in fns]
        if len(maps) == 1:
            return maps[0]
        return np.mean([(h - h.min()) / (h.max() - h.min()) if h.max() > h.min() else h * 0 for h in maps], axis=0)

    rows = evaluate_localization(heatmap, records, labels, label_map=label_map, ks=ks)
    log.info("localisation: %d (image, label) pairs from %d boxed images", len(rows), len(records))
    return {"localization": rows, "localization_summary": localization_summary(rows)}
