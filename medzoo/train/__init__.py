"""Training: losses, metrics, the Trainer, checkpoints, logging and distributed helpers.

Public names are resolved lazily (importing this package loads nothing heavy).

Example:
    >>> from medzoo.train import fit, load_run_config  # doctest: +SKIP
    >>> result = fit("configs/experiments/finetune_tb.yaml", ["train.max_steps=2"])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RunConfig", "TrainResult", "Trainer", "evaluate_checkpoint", "fit", "load_checkpoint",
           "load_run_config", "model_from_checkpoint", "save_checkpoint"]

_LAZY = {
    "RunConfig": "medzoo.train.config", "load_run_config": "medzoo.train.config",
    "Trainer": "medzoo.train.trainer", "TrainResult": "medzoo.train.trainer", "fit": "medzoo.train.trainer",
    "evaluate_checkpoint": "medzoo.train.run_eval",
    "load_checkpoint": "medzoo.train.checkpoint", "save_checkpoint": "medzoo.train.checkpoint",
    "model_from_checkpoint": "medzoo.train.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'medzoo.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
