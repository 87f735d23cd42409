"""Experiments: the resumable transfer-learning matrix of training runs and baselines with its tables, paired
statistics and plots, the task recipes, weak localisation, and ``medzoo demo``.

Public names are resolved lazily (importing this package loads nothing heavy).

Example:
    >>> from medzoo.experiment import run_experiment  # doctest: +SKIP
    >>> result = run_experiment("configs/transfer/lung_seg.yaml")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

from medzoo.utils.lazy import lazy_attach

__all__ = ["BaselineVariant", "ExperimentConfig", "ExperimentResult", "InitVariant", "TaskVariant", "fit_recipe",
           "load_experiment_config", "load_recipe", "run_demo", "run_experiment"]

__getattr__, __dir__ = lazy_attach(__name__, {
    "BaselineVariant": "medzoo.experiment.config", "ExperimentConfig": "medzoo.experiment.config",
    "InitVariant": "medzoo.experiment.config",
    "TaskVariant": "medzoo.experiment.config", "load_experiment_config": "medzoo.experiment.config",
    "ExperimentResult": "medzoo.experiment.runner", "run_experiment": "medzoo.experiment.runner",
    "run_demo": "medzoo.experiment.demo",
    "fit_recipe": "medzoo.experiment.recipes", "load_recipe": "medzoo.experiment.recipes",
})
