"""Training: losses, the Trainer, checkpoint writing, class weights, logging and distributed helpers.

Public names are resolved lazily (importing this package loads nothing heavy). Checkpoints are read back through
:mod:`medzoo.zoo.checkpoint` and evaluated with :mod:`medzoo.evaluation`.

Example:
    >>> from medzoo.train import fit, load_run_config  # doctest: +SKIP
    >>> result = fit("configs/experiments/finetune_tb.yaml", ["train.max_steps=2"])  # doctest: +SKIP
"""

from __future__ import annotations

from medzoo.utils.lazy import lazy_attach

__all__ = ["NonFiniteLoss", "RunConfig", "TrainResult", "Trainer", "fit", "load_run_config", "resolve_pos_weight",
           "save_checkpoint"]

__getattr__, __dir__ = lazy_attach(__name__, {
    "RunConfig": "medzoo.train.config", "load_run_config": "medzoo.train.config",
    "Trainer": "medzoo.train.trainer", "TrainResult": "medzoo.train.trainer", "fit": "medzoo.train.trainer",
    "NonFiniteLoss": "medzoo.train.trainer",
    "save_checkpoint": "medzoo.train.checkpoint", "resolve_pos_weight": "medzoo.train.class_weights",
})
