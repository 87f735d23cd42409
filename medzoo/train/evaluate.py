"""Evaluation: per-task metrics over one split of every dataset that labels the task.

Keys are ``<split>/<task>/<metric>``, plus ``<split>/loss`` (the weighted objective, averaged over batches):

- classification: ``accuracy``, ``macro_sensitivity``/``specificity``/``precision``/``f1`` and per class, ``auroc``
  (binary: of the positive class; otherwise the macro one-vs-rest mean);
- series-level classification (COVIDx-CT): the patient level is the aggregator output, the model's own answer (the keys
  above); the slice level applies the same head to each slice's pooled features, scored against
  ``meta["slice_labels"]`` when the reader gives them, under ``<split>/<task>/slice/...``;
- multilabel: ``auroc/<label>`` and ``mean_auroc``;
- regression: ``mae/<output>`` and ``r2/<output>`` in the outputs' own units;
- segmentation: ``dice/<class>``, ``iou/<class>`` (mean over samples where the class is present) and ``mean_dice``
  over the foreground classes.

With ``return_predictions=True``, :func:`evaluate` also returns the per-sample :class:`TaskPredictions` of every
non-dense task (probabilities, targets, sample and patient ids, and the slice level of series models), from which
:func:`prediction_metrics` gives the same metrics again (``medzoo evaluate --bootstrap`` and ensembles use them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from medzoo.metrics import (
    auroc,
    classification_metrics,
    dice_per_class,
    iou_per_class,
    mean_auroc,
    one_hot_targets,
    regression_metrics,
)
from medzoo.train import distributed
from medzoo.train.data import DatasetBundle
from medzoo.train.objective import Objective

__all__ = ["TaskPredictions", "evaluate", "move_batch", "prediction_metrics"]


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a batch on ``device`` (non-blocking); other entries as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


@dataclass
class TaskPredictions:
    """Per-sample predictions of one (non-dense) task over one split.

    Attributes:
        task: the model task.
        kind: ``class`` (softmax classes), ``vector`` (sigmoid labels) or ``regression``.
        labels: the head's L label (class, output) names.
        scores: ``[N, L]`` probabilities (regression: values in the outputs' own units).
        targets: ``[N]`` class indices (``class``) or ``[N, L]``; NaN = unknown.
        ids: N sample ids (a series model: one per series).
        patients: N patient ids.
        datasets: N dataset kinds (``covidx-ct``, ``nih-cxr14``...).
        slice_scores: ``[M, L]`` slice-level probabilities of a series model (its head on each slice), else None.
        slice_targets: ``[M]`` slice classes, else None.
        slice_series: M ids of the series each slice belongs to, else None.
        level: the task's input level (``image``, ``series``, ``volume``).
    """

    task: str
    kind: str
    labels: tuple[str, ...]
    scores: np.ndarray
    targets: np.ndarray
    ids: list[str]
    patients: list[str]
    datasets: list[str]
    slice_scores: np.ndarray | None = None
    slice_targets: np.ndarray | None = None
    slice_series: list[str] | None = None
    level: str = "image"


def _class_metrics(scores: np.ndarray, y: np.ndarray, names: list[str]) -> dict[str, float]:
    out = classification_metrics(y, scores, len(names), names)
    known = ~np.isnan(y)
    if len(names) == 2:
        out["auroc"] = float(auroc(scores[known, 1], y[known])) if known.any() else math.nan
    else:
        out["auroc"] = mean_auroc(scores, one_hot_targets(y, len(names)))
    return out


def prediction_metrics(pred: TaskPredictions) -> dict[str, float]:
    """The metrics of :func:`evaluate` (``{"<metric>": value}``, no split or task prefix) from predictions.

    Example:
        >>> p = TaskPredictions("t", "vector", ("a",), np.array([[0.2], [0.9]]), np.array([[0.0], [1.0]]),
        ...                     ["x", "y"], ["x", "y"], ["d", "d"])
        >>> prediction_metrics(p)["mean_auroc"]
        1.0
    """
    names = list(pred.labels)
    scores, y = pred.scores, pred.targets
    if pred.kind == "regression":
        return regression_metrics(scores, y, names)
    if pred.kind == "vector":
        per = np.atleast_1d(auroc(scores, y))
        return {**{f"auroc/{n}": float(v) for n, v in zip(names, per)}, "mean_auroc": mean_auroc(scores, y)}
    out = _class_metrics(scores, y, names)
    if pred.slice_scores is not None and len(pred.slice_scores):
        out.update({f"slice/{k}": v for k, v in _class_metrics(pred.slice_scores, pred.slice_targets, names).items()})
    return out


Key = tuple[int, int]  # (dataset index, batch index): the order of a single-process evaluation


class _Collector:
    """Accumulates predictions and targets of one task, per batch, so chunks from several ranks merge in order."""

    def __init__(self, head: nn.Module, kind: str, task: str = "", level: str = "image") -> None:
        self.task, self.head, self.kind, self.level = task, head, kind, level
        self.chunks: dict[Key, dict[str, Any]] = {}

    def add(self, logits: Tensor, target: Tensor, meta: list[tuple[str, str, str]] | None = None,
            key: Key | None = None) -> None:
        """One batch: ``logits`` ``[B, L]`` (dense: ``[B, K, *spatial]``) and ``target``; ``key`` its place in the
        evaluation order (default: after the chunks so far)."""
        logits, target = logits.float().cpu(), target.float().cpu()
        key = (0, len(self.chunks)) if key is None else key
        chunk = self.chunks.setdefault(key, {})
        if self.kind == "dense":
            pred = self.head.activate(logits, tuple(target.shape[-(logits.dim() - 2):]))["pred"]
            labels = target[:, 0] if target.dim() == logits.dim() else target
            k = max(2, logits.shape[1])
            chunk["dice"] = dice_per_class(pred, labels.long(), num_classes=k)
            chunk["iou"] = iou_per_class(pred, labels.long(), num_classes=k)
            return
        if self.kind == "regression":
            logits, target = self.head.unscale(logits), self.head.unscale(target)
        elif self.kind == "class":
            logits = logits.softmax(-1)
        else:
            logits = logits.sigmoid()
        chunk["scores"], chunk["targets"] = logits.numpy(), target.numpy()
        chunk["meta"] = meta or [(f"{key[0]}:{key[1]}:{i}",) * 2 + ("",) for i in range(len(target))]

    def add_slices(self, logits: Tensor, pad_mask: Tensor, labels: Tensor, series: list[str],
                   key: Key | None = None) -> None:
        """Slice-level scores ``[B, N, L]`` of the batch at ``key`` (default: the last one added)."""
        valid = ~pad_mask.cpu()
        chunk = self.chunks.setdefault(max(self.chunks) if key is None else key, {})
        chunk["slice_scores"] = logits.float().cpu().softmax(-1)[valid].numpy()
        chunk["slice_targets"] = labels[valid].numpy()
        chunk["slice_series"] = [sid for sid, n in zip(series, valid.sum(1).tolist()) for _ in range(int(n))]

    def merge(self, chunks: dict[Key, dict[str, Any]]) -> None:
        """Add another rank's chunks (their keys never collide: each batch is evaluated by one rank)."""
        self.chunks.update(chunks)

    def _ordered(self, name: str) -> list[Any]:
        return [c[name] for _, c in sorted(self.chunks.items()) if name in c]

    def predictions(self) -> TaskPredictions:
        ids, patients, kinds = (list(c) for c in zip(*[m for meta in self._ordered("meta") for m in meta]))
        sl = bool(self._ordered("slice_scores"))
        return TaskPredictions(self.task, self.kind, tuple(self.head.label_names),
                               np.concatenate(self._ordered("scores")), np.concatenate(self._ordered("targets")),
                               ids, patients, kinds,
                               np.concatenate(self._ordered("slice_scores")) if sl else None,
                               np.concatenate(self._ordered("slice_targets")) if sl else None,
                               [s for part in self._ordered("slice_series") for s in part] if sl else None,
                               self.level)

    def result(self) -> dict[str, float]:
        if self.kind != "dense":
            return prediction_metrics(self.predictions())
        names = list(self.head.label_names)
        classes = names if len(names) > 1 else ["background", names[0]]
        out = {}
        for metric in ("dice", "iou"):
            per_class = _nanmean(torch.cat(self._ordered(metric)).numpy())
            out.update({f"{metric}/{n}": float(v) for n, v in zip(classes, per_class)})
            fg = per_class[1:][np.isfinite(per_class[1:])]
            out[f"mean_{metric}"] = float(fg.mean()) if len(fg) else math.nan
        return out


def _nanmean(rows: np.ndarray) -> np.ndarray:
    out = np.full(rows.shape[1], np.nan)
    for j in range(rows.shape[1]):
        col = rows[:, j][~np.isnan(rows[:, j])]
        out[j] = col.mean() if len(col) else np.nan
    return out


def _slice_labels(batch: dict[str, Any], bundle: DatasetBundle, task: str, n: int) -> Tensor | None:
    """``[B, N]`` per-slice labels (mapped to the head's classes, NaN at padding) or None when not given."""
    rows = [m.get("slice_labels", bundle.slice_labels.get(str(m.get("id")))) for m in batch.get("meta", [])]
    if not rows or any(r is None for r in rows):
        return None
    out = torch.full((len(rows), n), math.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(np.asarray(r, dtype=np.float32))
    return bundle.mapping._convert(task, out)


class _Batches(Sampler[list[int]]):
    """Batches ``rank, rank + world, ...`` of the sequential batches of a single-process evaluation.

    Sharding whole batches (rather than samples, as ``DistributedSampler`` does) keeps every batch as a single
    process forms it, so the per-batch losses, series padding and numerics are identical; no batch is padded or
    repeated, so nothing counts twice, and ranks differ by at most one batch (evaluation has no collective until
    the final gather).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        every = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        self.index = list(range(rank, len(every), world))
        self.batches = [every[i] for i in self.index]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loader(bundle: DatasetBundle, split: str, collate_fn: Any, shard: tuple[int, int],
            loader_kwargs: dict[str, Any], cache: dict | None) -> DataLoader | None:
    ds = bundle.splits.get(split)
    if ds is None:
        return None
    key = (bundle.name, split)
    if cache is not None and key in cache:
        return cache[key]
    batches = _Batches(len(ds), bundle.config.eval_batch_size or bundle.config.batch_size, *shard)
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate_fn, generator=torch.Generator(),
                        **loader_kwargs)  # own generator: the global RNG stays untouched
    if cache is not None:
        cache[key] = loader
    return loader


def _gather(collectors: dict[str, _Collector], losses: dict[Key, float], model: nn.Module) -> None:
    """Merge every rank's chunks and losses into each rank's ``collectors`` and ``losses`` (in place)."""
    mine = {"losses": losses, "tasks": {t: (c.kind, c.level, c.chunks) for t, c in collectors.items()}}
    for r, theirs in enumerate(distributed.all_gather(mine)):
        if r == distributed.rank():
            continue
        losses.update(theirs["losses"])
        for task, (kind, level, chunks) in theirs["tasks"].items():
            collectors.setdefault(task, _Collector(model.heads[task], kind, task, level)).merge(chunks)


@torch.no_grad()
def evaluate(model: nn.Module, bundles: Sequence[DatasetBundle], split: str, objective: Objective,
             device: torch.device, collate_fn: Any, max_batches: int | None = None,
             keep_images: bool = False, return_predictions: bool = False, *,
             loader_kwargs: dict[str, Any] | None = None, loaders: dict | None = None) -> tuple[Any, ...]:
    """Metrics of ``model`` on ``split`` of every dataset that has it.

    Under DDP (an initialised process group) every rank must call this: each evaluates every ``world``-th batch,
    the per-batch predictions and losses are all-gathered in the single-process order, and every rank returns the
    metrics of one single-process evaluation of its model. Give every rank the same weights and batch-norm
    buffers (:func:`medzoo.train.distributed.broadcast_buffers`).

    Args:
        model: a ``MultiTaskModel`` (not the DDP wrapper: evaluation runs no collective per batch).
        objective: the loss, normalised per process (``world_size=1``).
        max_batches: evaluate only the first ``max_batches`` batches of each dataset.
        loader_kwargs: further DataLoader arguments (``num_workers``, ``pin_memory``...).
        loaders: a dict the caller keeps between calls, in which the DataLoaders are kept (persistent workers).

    Returns:
        ``(metrics, images)``; ``images`` holds, per dense task when ``keep_images``, the first batch's
        ``(image, predicted labels, true labels)`` for overlays (on rank 0). With ``return_predictions``,
        ``(metrics, images, predictions)`` where ``predictions`` is ``{task: TaskPredictions}`` for every non-dense
        task.

    Raises:
        ValueError: an objective normalised across ranks (its per-batch all-reduce would not match up).
    """
    if objective.world_size != 1:
        raise ValueError("evaluate needs an objective normalised per process (world_size=1)")
    shard = (distributed.rank(), distributed.world_size())
    was_training = model.training
    model.eval()
    collectors: dict[str, _Collector] = {}
    images: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
    losses: dict[Key, float] = {}
    for d, bundle in enumerate(bundles):
        loader = _loader(bundle, split, collate_fn, shard, loader_kwargs or {}, loaders)
        for b, batch in zip(loader.batch_sampler.index if loader else [], loader or []):
            if max_batches is not None and b >= max_batches:
                break
            _eval_batch(model, bundle, move_batch(batch, device), objective, collectors, images, losses,
                        keep_images, (d, b))
    model.train(was_training)
    if shard[1] > 1:
        _gather(collectors, losses, model)
    out = {f"{split}/loss": float(np.mean([v for _, v in sorted(losses.items())]))} if losses else {}
    for task, col in collectors.items():
        out.update({f"{split}/{task}/{k}": v for k, v in col.result().items()})
    if return_predictions:
        return out, images, {t: c.predictions() for t, c in collectors.items() if c.kind != "dense"}
    return out, images


def _sample_meta(batch: dict[str, Any], bundle: DatasetBundle, n: int) -> list[tuple[str, str, str]]:
    """``(id, patient id, dataset kind)`` of each sample of a batch (ids from ``meta``, else batch positions)."""
    metas = batch.get("meta") or [{}] * n
    out = []
    for i, m in enumerate(metas):
        sid = str(m.get("id", f"{bundle.name}:{i}"))
        out.append((sid, str(m.get("patient_id") or sid), str(bundle.config.kind)))
    return out


def _eval_batch(model: nn.Module, bundle: DatasetBundle, batch: dict[str, Any], objective: Objective,
                collectors: dict[str, _Collector], images: dict, losses: dict[Key, float], keep_images: bool,
                key: Key) -> None:
    targets = bundle.mapping.targets(batch, bundle.name)
    pad_mask = batch.get("pad_mask")
    outputs = model(batch["image"], pad_mask=pad_mask, tasks=list(targets))
    total, _ = objective(outputs, targets)
    losses[key] = float(total)
    meta = _sample_meta(batch, bundle, batch["image"].shape[0])
    for task, target in targets.items():
        col = collectors.setdefault(task, _Collector(model.heads[task], bundle.mapping.kinds[task], task,
                                                        model.task_levels[task]))
        col.add(outputs[task], target, meta, key)
        if col.kind == "class" and model.task_levels[task] == "series":
            labels = _slice_labels(batch, bundle, task, batch["image"].shape[1])
            if labels is not None:
                slices = model.slice_logits(batch["image"], pad_mask, tasks=[task])[task]
                col.add_slices(slices, pad_mask if pad_mask is not None else torch.zeros_like(labels, dtype=bool),
                               labels, [m[0] for m in meta], key)
        if keep_images and col.kind == "dense" and task not in images:
            size = tuple(target.shape[2:]) if target.dim() == outputs[task].dim() else tuple(target.shape[1:])
            pred = model.heads[task].activate(outputs[task].float(), size)["pred"]
            images[task] = (batch["image"][:1].cpu(), pred[:1].cpu(), target[:1].cpu())
