"""Transfer-learning experiments: a resumable matrix of training runs and baselines, its tables, paired statistics
and plots, and ``medzoo demo``.

Public names are resolved lazily (importing this package loads nothing heavy).

Example:
    >>> from medzoo.experiment import run_experiment  # doctest: +SKIP
    >>> result = run_experiment("configs/experiments/transfer_lung_seg.yaml")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BaselineVariant", "ExperimentConfig", "ExperimentResult", "InitVariant", "TaskVariant",
           "load_experiment_config", "run_demo", "run_experiment"]

_LAZY = {
    "BaselineVariant": "medzoo.experiment.config", "ExperimentConfig": "medzoo.experiment.config",
    "InitVariant": "medzoo.experiment.config",
    "TaskVariant": "medzoo.experiment.config", "load_experiment_config": "medzoo.experiment.config",
    "ExperimentResult": "medzoo.experiment.runner", "run_experiment": "medzoo.experiment.runner",
    "run_demo": "medzoo.experiment.demo",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'medzoo.experiment' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
