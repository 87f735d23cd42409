"""Evaluate a model on the datasets of a run config (``medzoo evaluate``), alone or as an ensemble.

- :func:`evaluate_checkpoint`: metrics, and with ``return_predictions`` the per-sample
  :class:`~medzoo.train.evaluate.TaskPredictions` of every non-dense task;
- :func:`ensemble_predictions` / :func:`ensemble_metrics`: several models' probabilities averaged per task over
  the tasks and labels they share (Wehbe et al. 2020; a task or label that one member lacks cannot be averaged);
- :func:`metrics_rows`: the flat metrics as ``(split, task, metric, value)`` rows for tables.

The tables (bootstrap CIs, COVIDx-CT levels) are in :mod:`medzoo.evaluation.tables`, the localisation scores in
:mod:`medzoo.evaluation.heatmaps`.

Example:
    >>> metrics = evaluate_checkpoint("configs/experiments/finetune_tb.yaml", "runs/tb/best.pt")  # doctest: +SKIP
    >>> metrics["test/tb/accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.config import ConfigError
from medzoo.data.collate import collate
from medzoo.infer.ensemble import shared_tasks
from medzoo.train.class_weights import resolve_pos_weight
from medzoo.train.config import RunConfig, load_run_config
from medzoo.train.data import build_datasets
from medzoo.train.evaluate import TaskPredictions, evaluate, prediction_metrics
from medzoo.train.objective import Objective
from medzoo.utils.device import resolve_device
from medzoo.zoo.resolver import resolve

__all__ = ["ensemble_metrics", "ensemble_predictions", "evaluate_checkpoint", "metrics_rows"]

log = logging.getLogger(__name__)


def evaluate_checkpoint(cfg: RunConfig | str | Path | dict, checkpoint: str | Path, split: str = "test",
                        overrides: Sequence[str] = (), device: str | None = None,
                        return_predictions: bool = False) -> Any:
    """Metrics of a checkpoint's model on ``split`` of the config's datasets.

    Args:
        cfg: the run config (its ``data`` and ``train.loss``); the model is rebuilt from the checkpoint's own config,
            and reads the datasets with the preprocessing it records (a config preset that differs is logged).
        checkpoint: a model reference (:func:`medzoo.zoo.resolve`): a Trainer checkpoint (``best.pt``,
            ``last.pt``), an export directory or a catalog name.
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
    run = resolve_pos_weight(cfg if isinstance(cfg, RunConfig) and not overrides else load_run_config(cfg, overrides))
    path = Path(checkpoint)
    resolved = resolve(checkpoint)
    model = resolved.model
    missing = sorted(set(run.model.tasks) - set(model.tasks))
    if missing:
        raise ConfigError(f"{path}: the checkpoint's model has no task(s) {missing}; it has {model.tasks}")
    dev = resolve_device(device or run.train.device)
    model.to(dev)
    bundles = build_datasets(run, model, resolved.preprocessing)  # the inputs the model was trained on
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


