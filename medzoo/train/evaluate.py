"""Evaluation: per-task metrics over one split of every dataset that labels the task.

Keys are ``<split>/<task>/<metric>``, plus ``<split>/loss`` (the weighted objective, averaged over batches):

- classification: ``accuracy``, ``macro_sensitivity``/``specificity``/``precision``/``f1`` and per class, ``auroc``
  (binary: of the positive class; otherwise the macro one-vs-rest mean);
- series-level classification (COVIDx-CT, DECISIONS 19): the patient level is the aggregator output (the keys
  above); the slice level applies the same head to each slice's pooled features, scored against
  ``meta["slice_labels"]`` when the reader gives them, under ``<split>/<task>/slice/...``;
- multilabel: ``auroc/<label>`` and ``mean_auroc``;
- regression: ``mae/<output>`` and ``r2/<output>`` in the outputs' own units;
- segmentation: ``dice/<class>``, ``iou/<class>`` (mean over samples where the class is present) and ``mean_dice``
  over the foreground classes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from medzoo.train import metrics as M
from medzoo.train.data import DatasetBundle
from medzoo.train.objective import Objective

__all__ = ["evaluate", "move_batch"]


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a batch on ``device`` (non-blocking); other entries as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class _Collector:
    """Accumulates predictions and targets of one task."""

    def __init__(self, head: nn.Module, kind: str) -> None:
        self.head, self.kind = head, kind
        self.scores: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.slice_scores: list[np.ndarray] = []
        self.slice_targets: list[np.ndarray] = []
        self.overlap: dict[str, list[Tensor]] = defaultdict(list)

    def add(self, logits: Tensor, target: Tensor) -> None:
        logits, target = logits.float().cpu(), target.float().cpu()
        if self.kind == "dense":
            pred = self.head.activate(logits, tuple(target.shape[-(logits.dim() - 2):]))["pred"]
            labels = target[:, 0] if target.dim() == logits.dim() else target
            k = max(2, logits.shape[1])
            self.overlap["dice"].append(M.dice_per_class(pred, labels.long(), num_classes=k))
            self.overlap["iou"].append(M.iou_per_class(pred, labels.long(), num_classes=k))
            return
        if self.kind == "regression":
            logits, target = self.head.unscale(logits), self.head.unscale(target)
        elif self.kind == "class":
            logits = logits.softmax(-1)
        else:
            logits = logits.sigmoid()
        self.scores.append(logits.numpy())
        self.targets.append(target.numpy())

    def add_slices(self, logits: Tensor, pad_mask: Tensor, labels: Tensor) -> None:
        valid = ~pad_mask.cpu()
        self.slice_scores.append(logits.float().cpu().softmax(-1)[valid].numpy())
        self.slice_targets.append(labels[valid].numpy())

    def _class_metrics(self, scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
        names = list(self.head.label_names)
        out = M.classification_metrics(y, scores, len(names), names)
        known = ~np.isnan(y)
        if len(names) == 2:
            out["auroc"] = float(M.auroc(scores[known, 1], y[known])) if known.any() else math.nan
        else:
            out["auroc"] = M.mean_auroc(scores, M.one_hot_targets(y, len(names)))
        return out

    def result(self) -> dict[str, float]:
        names = list(self.head.label_names)
        if self.kind == "dense":
            classes = names if len(names) > 1 else ["background", names[0]]
            out = {}
            for metric, rows in self.overlap.items():
                per_class = _nanmean(torch.cat(rows).numpy())
                out.update({f"{metric}/{n}": float(v) for n, v in zip(classes, per_class)})
                fg = per_class[1:][np.isfinite(per_class[1:])]
                out[f"mean_{metric}"] = float(fg.mean()) if len(fg) else math.nan
            return out
        scores, y = np.concatenate(self.scores), np.concatenate(self.targets)
        if self.kind == "regression":
            return M.regression_metrics(scores, y, names)
        if self.kind == "vector":
            per = np.atleast_1d(M.auroc(scores, y))
            return {**{f"auroc/{n}": float(v) for n, v in zip(names, per)}, "mean_auroc": M.mean_auroc(scores, y)}
        out = self._class_metrics(scores, y)
        if self.slice_scores:
            ss, sy = np.concatenate(self.slice_scores), np.concatenate(self.slice_targets)
            out.update({f"slice/{k}": v for k, v in self._class_metrics(ss, sy).items()})
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


@torch.no_grad()
def evaluate(model: nn.Module, bundles: Sequence[DatasetBundle], split: str, objective: Objective,
             device: torch.device, collate_fn: Any, max_batches: int | None = None,
             keep_images: bool = False) -> tuple[dict[str, float], dict[str, tuple[Tensor, Tensor, Tensor]]]:
    """Metrics of ``model`` on ``split`` of every dataset that has it.

    Returns:
        ``(metrics, images)``; ``images`` holds, per dense task when ``keep_images``, the first batch's
        ``(image, predicted labels, true labels)`` for overlays.
    """
    was_training = model.training
    model.eval()
    collectors: dict[str, _Collector] = {}
    images: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
    losses: list[float] = []
    for bundle in bundles:
        ds = bundle.splits.get(split)
        if ds is None:
            continue
        loader = DataLoader(ds, batch_size=bundle.config.eval_batch_size or bundle.config.batch_size,
                            shuffle=False, collate_fn=collate_fn, generator=torch.Generator())  # global RNG untouched
        for b, batch in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            _eval_batch(model, bundle, move_batch(batch, device), objective, collectors, images, losses, keep_images)
    model.train(was_training)
    out = {f"{split}/loss": float(np.mean(losses))} if losses else {}
    for task, col in collectors.items():
        out.update({f"{split}/{task}/{k}": v for k, v in col.result().items()})
    return out, images


def _eval_batch(model: nn.Module, bundle: DatasetBundle, batch: dict[str, Any], objective: Objective,
                collectors: dict[str, _Collector], images: dict, losses: list[float], keep_images: bool) -> None:
    targets = bundle.mapping.targets(batch, bundle.name)
    pad_mask = batch.get("pad_mask")
    outputs = model(batch["image"], pad_mask=pad_mask, tasks=list(targets))
    total, _ = objective(outputs, targets)
    losses.append(float(total))
    for task, target in targets.items():
        col = collectors.setdefault(task, _Collector(model.heads[task], bundle.mapping.kinds[task]))
        col.add(outputs[task], target)
        if col.kind == "class" and model.task_levels[task] == "series":
            labels = _slice_labels(batch, bundle, task, batch["image"].shape[1])
            if labels is not None:
                slices = model.slice_logits(batch["image"], pad_mask, tasks=[task])[task]
                col.add_slices(slices, pad_mask if pad_mask is not None else torch.zeros_like(labels, dtype=bool),
                               labels)
        if keep_images and col.kind == "dense" and task not in images:
            size = tuple(target.shape[2:]) if target.dim() == outputs[task].dim() else tuple(target.shape[1:])
            pred = model.heads[task].activate(outputs[task].float(), size)["pred"]
            images[task] = (batch["image"][:1].cpu(), pred[:1].cpu(), target[:1].cpu())
