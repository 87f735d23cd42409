"""Evaluate a checkpoint on the datasets of a run config (``medzoo evaluate``).

Example:
    >>> metrics = evaluate_checkpoint("configs/experiments/finetune_tb.yaml", "runs/tb/best.pt")  # doctest: +SKIP
    >>> metrics["test/tb/accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medzoo.train.config import RunConfig, load_run_config

__all__ = ["evaluate_checkpoint", "metrics_rows"]

log = logging.getLogger(__name__)


def evaluate_checkpoint(cfg: RunConfig | str | Path | dict, checkpoint: str | Path, split: str = "test",
                        overrides: Sequence[str] = (), device: str | None = None) -> dict[str, float]:
    """Metrics of a checkpoint's model on ``split`` of the config's datasets.

    Args:
        cfg: the run config (its ``data`` and ``train.loss``); the model is rebuilt from the checkpoint's own config.
        checkpoint: a Trainer checkpoint (``best.pt``, ``last.pt``) or an export directory.
        split: ``train``, ``val`` or ``test``.
        overrides: ``--set`` overrides of ``cfg``.
        device: ``cpu``, ``cuda``... (default: ``train.device``).

    Returns:
        ``{"<split>/<task>/<metric>": value}`` (see :mod:`medzoo.train.evaluate`).

    Raises:
        CheckpointError: an unreadable checkpoint.
        ConfigError: a config whose tasks the checkpoint's model lacks.
    """
    from medzoo.config import ConfigError
    from medzoo.data.collate import collate
    from medzoo.models import create_model
    from medzoo.train.checkpoint import model_from_checkpoint
    from medzoo.train.data import build_datasets
    from medzoo.train.evaluate import evaluate
    from medzoo.train.objective import Objective
    from medzoo.train.trainer import _device

    run = cfg if isinstance(cfg, RunConfig) and not overrides else load_run_config(cfg, overrides)
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
        metrics, _ = evaluate(model, bundles, split, objective, dev, collate)
    if not metrics:
        raise ValueError(f"no dataset of the config has a {split!r} split")
    log.info("evaluated %s on %s: %d metrics", path, split, len(metrics))
    return metrics


def metrics_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """``(split, task, metric, value)`` rows of a flat metrics dict, sorted by task then metric."""
    rows = []
    for key, value in metrics.items():
        parts = key.split("/")
        task, metric = ("", parts[-1]) if len(parts) <= 2 else (parts[1], "/".join(parts[2:]))
        rows.append((parts[0], task, metric, float(value)))
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))
