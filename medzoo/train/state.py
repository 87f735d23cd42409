"""The checkpoint side of the :class:`~medzoo.train.trainer.Trainer`: what ``last.pt`` / ``best.pt`` hold, how every
rank contributes to one (its RNG states) while rank 0 writes it, and how a resume restores it.

Example:
    >>> from medzoo.train.trainer import Trainer
    >>> issubclass(Trainer, CheckpointState)
    True
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medzoo.train import distributed
from medzoo.train.checkpoint import capture_rng, restore_rng, save_checkpoint
from medzoo.train.config import run_config_yaml
from medzoo.train.data import recorded_preprocessing
from medzoo.zoo.export import runtime_versions

__all__ = ["CheckpointState"]

log = logging.getLogger(__name__)


class CheckpointState:
    """Checkpoint state of a Trainer (its model, optimizer, scheduler, scaler, position, best and history)."""

    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    cfg: Any
    bundles: Any
    run_dir: Path
    world: int
    rank: int

    def state(self, rng: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint dict (see :mod:`medzoo.train.checkpoint`); ``rng``: every rank's RNG states."""
        rng = list(rng) if rng is not None else [capture_rng()]
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng[0],
                "rng_ranks": rng, "world_size": self.world,
                "step": self.step, "epoch": self.epoch, "batch": self.batch_in_epoch, "best": self.best,
                "early_stopping": {"bad_evals": self.bad_evals, "best": getattr(self, "_es_best", None),
                                   "stopped": self.stopped_early},
                "history": json.dumps(self.history), "config": run_config_yaml(self.cfg),
                "preprocessing": recorded_preprocessing(self.bundles), "versions": runtime_versions()}

    def save(self, name: str) -> Path | None:
        """Write a checkpoint into the run folder. Every rank calls it (each gives its RNG states); rank 0 writes,
        and the others wait at a barrier until the file is complete."""
        rng = distributed.all_gather(capture_rng())
        path = save_checkpoint(self.run_dir / name, self.state(rng)) if distributed.is_main() else None
        distributed.barrier()
        return path

    def load_state(self, ckpt: dict[str, Any]) -> None:
        """Restore a checkpoint written by :meth:`state` (resume)."""
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.batch_in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch"])
        self.resumed_step = self.step
        self.best = ckpt.get("best")
        es = ckpt.get("early_stopping") or {}
        self.bad_evals, self.stopped_early = int(es.get("bad_evals", 0)), bool(es.get("stopped", False))
        if es.get("best") is not None:
            self._es_best = es["best"]
        self.history = json.loads(ckpt.get("history") or "[]")
        ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if len(ranks) != self.world:
            log.warning("last.pt was written by %d process(es), this run has %d: the data shards and random streams "
                        "differ, so this resume is not exact", len(ranks), self.world)
        restore_rng(ranks[self.rank] if len(ranks) == self.world else ckpt["rng"])
        log.info("resumed at step %d (epoch %d, batch %d)", self.step, self.epoch, self.batch_in_epoch)
