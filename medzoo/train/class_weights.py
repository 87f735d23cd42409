"""Class-frequency loss weights: ``pos_weight: auto`` in a ``bce`` loss, resolved from the training split.

``pos_weight: auto`` (``train.loss.<task>.options``) means "negatives / positives of each label in the training
split", the class balancing of CheXNet (w+ = |N| / (|P| + |N|), w- = |P| / (|P| + |N|); the same ratio w+ / w-,
with the negative term kept at weight 1 as ``BCEWithLogitsLoss`` does). :func:`resolve_pos_weight` replaces it with
the numbers, read from the labels of the same patient-level split the Trainer makes (no image is loaded); the Trainer
and checkpoint evaluation call it before building the loss.

Example:
    >>> from medzoo.train.config import load_run_config
    >>> cfg = load_run_config("configs/experiments/tb.yaml")  # doctest: +SKIP
    >>> resolve_pos_weight(cfg) is cfg  # no `auto` in it: unchanged  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.config import ConfigError
from medzoo.data import open_dataset, patient_split
from medzoo.train.config import RunConfig
from medzoo.train.data import _subsample, label_index

__all__ = ["label_counts", "resolve_pos_weight"]

log = logging.getLogger(__name__)


def _train_split(cfg: RunConfig, i: int, d: Any) -> Any:
    """The training records of ``data[i]`` as the trainer splits and subsamples them."""
    try:
        manifest = open_dataset(d.kind, Path(cfg.data_root).expanduser() / d.root, **d.options)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as err:
        raise ConfigError(f"data[{i}] ({d.kind} at {d.root}, data_root {cfg.data_root}): {err}") from err
    seed = cfg.train.seed if d.split.seed is None else d.split.seed
    parts = patient_split(manifest, d.split.fractions, seed=seed, stratify=d.split.stratify,
                          official=d.split.official)
    return manifest, _subsample(parts["train"], d.fraction, seed)


def label_counts(cfg: RunConfig, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative counts ``([L], [L])`` of a multilabel task over the training splits that label it.

    Dataset columns are matched to the head's labels by name, as the trainer does; NaN (unknown) is not counted.

    Raises:
        ConfigError: ``task`` is not a multilabel model task, or no dataset labels it.
    """
    tc = cfg.model.tasks.get(task)
    if tc is None or tc.type != "multilabel":
        raise ConfigError(f"train.loss.{task}: pos_weight 'auto' needs a multilabel model task, got "
                          f"{None if tc is None else tc.type!r}")
    labels = list(tc.labels or [])
    pos, neg, seen = np.zeros(len(labels)), np.zeros(len(labels)), False
    for i, d in enumerate(cfg.data):
        for src in (s for s, t in d.tasks.items() if t == task):
            manifest, train = _train_split(cfg, i, d)
            if src not in manifest.label_names:
                raise ConfigError(f"data[{i}].tasks.{src}: dataset {d.kind!r} has no task {src!r}; its tasks: "
                                  f"{manifest.tasks}")
            index = label_index(manifest.label_names[src], labels, f"data[{i}].tasks.{src}", d.ignore_labels)
            cols = np.asarray(index)
            for rec in train:
                y = np.asarray(rec.labels.get(src, []), dtype=np.float64).reshape(-1)
                if y.size == 0:
                    continue
                picked = np.where(cols >= 0, y[np.clip(cols, 0, None)], np.nan)
                pos += picked == 1
                neg += picked == 0
            seen = True
    if not seen:
        raise ConfigError(f"train.loss.{task}: pos_weight 'auto' but no dataset feeds task {task!r}")
    return pos, neg


def resolve_pos_weight(cfg: RunConfig) -> RunConfig:
    """Replace ``pos_weight: auto`` in ``train.loss`` with negatives / positives per label (training split).

    A label with no positive training example gets 1.0 (logged). Other configs are returned unchanged.

    Example:
        >>> from medzoo.train.config import load_run_config
        >>> cfg = resolve_pos_weight(load_run_config("configs/experiments/cxr14_chexnet.yaml"))  # doctest: +SKIP
        >>> cfg.train.loss["findings"].options["pos_weight"][:2]  # doctest: +SKIP
        [6.5, 12.0]
    """
    losses = dict(cfg.train.loss)
    changed = False
    for task, lc in losses.items():
        if str(lc.options.get("pos_weight", "")).lower() != "auto":
            continue
        pos, neg = label_counts(cfg, task)
        weights = [float(n / p) if p > 0 else 1.0 for p, n in zip(pos, neg)]
        missing = [lab for lab, p in zip(cfg.model.tasks[task].labels, pos) if p == 0]
        if missing:
            log.warning("task %s: no positive training label for %s; their pos_weight is 1.0", task, missing)
        losses[task] = replace(lc, options={**lc.options, "pos_weight": [round(w, 6) for w in weights]})
        log.info("task %s: pos_weight from %d training labels: %s", task, int((pos + neg).max()), weights)
        changed = True
    return replace(cfg, train=replace(cfg.train, loss=losses)) if changed else cfg
