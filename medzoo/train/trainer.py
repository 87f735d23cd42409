"""The Trainer: a short, linear multi-dataset multi-task loop; behaviour comes from config and callbacks.

Each batch comes from one dataset (:mod:`medzoo.train.sampling`); its labels are mapped by name onto model tasks
(:mod:`medzoo.train.data`), only those heads run, and their masked losses are weighted and summed
(:mod:`medzoo.train.objective`). Callbacks (minGPT style) hook ``on_train_start``, ``on_step_end``,
``on_eval_end`` and ``on_train_end``; TensorBoard and the progress bar are callbacks.

The run folder (``output.dir``) holds ``config.yaml`` (the resolved config), ``last.pt`` (every
``checkpoint_every`` steps and at each epoch end), ``best.pt`` (by ``train.best_metric``), ``metrics.jsonl`` (one
line per evaluation), ``result.json`` and ``tb/``. ``resume=True`` continues from ``last.pt`` exactly: model,
optimizer, scheduler, scaler, RNG states, and the batch position within the epoch (the data order is a function of
(seed, epoch), the augmentation of (seed, epoch, index)).

Example:
    >>> result = fit("configs/experiments/pretrain_multitask.yaml", ["train.max_steps=2"])  # doctest: +SKIP
    >>> result.metrics["val/covid_ct/accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medzoo.data.collate import collate
from medzoo.models import create_model
from medzoo.train import distributed
from medzoo.train.callbacks import ProgressCallback
from medzoo.train.checkpoint import capture_rng, restore_rng, save_checkpoint
from medzoo.train.class_weights import resolve_pos_weight
from medzoo.train.config import RunConfig, load_run_config, run_config_yaml
from medzoo.train.data import build_datasets, recorded_preprocessing
from medzoo.train.evaluate import evaluate, move_batch
from medzoo.train.init import apply_init
from medzoo.train.objective import Objective
from medzoo.train.optim import build_optimizer, build_scheduler
from medzoo.train.sampling import BatchPlan, MultiLoader
from medzoo.train.tb import TensorBoardCallback
from medzoo.utils.device import resolve_device
from medzoo.zoo.checkpoint import load_checkpoint
from medzoo.zoo.export import runtime_versions

__all__ = ["Trainer", "TrainResult", "fit"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run gives back: final metrics (``val/...``, ``test/...``), the best checkpoint and the history."""

    run_dir: str
    step: int
    epoch: int
    metrics: dict[str, float]
    best: dict[str, Any] | None
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains a :class:`~medzoo.models.MultiTaskModel` as a :class:`~medzoo.train.config.RunConfig` says.

    Args:
        cfg: the run config (or a YAML path / mapping, loaded with ``overrides``).
        overrides: dotted ``--set`` overrides.
        resume: continue from ``<output.dir>/last.pt`` when it exists.
        quiet: no progress bar.
        callbacks: ``{event: [fn(trainer)]}`` added to the built-in ones.
    """

    def __init__(self, cfg: RunConfig | str | Path | dict, overrides: Sequence[str] = (), *, resume: bool = False,
                 quiet: bool = False, callbacks: dict[str, list[Callable]] | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, RunConfig) and not overrides else load_run_config(cfg, overrides)
        self.cfg = resolve_pos_weight(self.cfg)  # `pos_weight: auto` -> negatives/positives of the training split
        t = self.cfg.train
        distributed.init_distributed(t.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.device = resolve_device(t.device)
        self.run_dir = Path(self.cfg.output.dir)
        _seed_all(t.seed)
        self.model = create_model(self.cfg.model).to(self.device)
        if not resume or not (self.run_dir / "last.pt").is_file():
            apply_init(self.model, self.cfg.init)
        self.bundles = build_datasets(self.cfg, self.model)
        self._build_loader(collate)
        self.objective = Objective(self.cfg.model, t.loss, self.world).to(self.device)
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, self.total_steps)
        self.amp = bool(t.amp and self.device.type == "cuda")
        if t.amp and not self.amp:
            log.warning("train.amp applies on CUDA only; training in float32 on %s", self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.net = self._wrap_ddp()
        self._reset_state()
        self.callbacks: dict[str, list[Callable]] = defaultdict(list)
        self._default_callbacks(quiet)
        for event, fns in (callbacks or {}).items():
            self.callbacks[event].extend(fns)
        if resume and (self.run_dir / "last.pt").is_file():
            self.load_state(load_checkpoint(self.run_dir / "last.pt"))

    # ----------------------------------------------------------------------------------------------- set-up
    def _reset_state(self) -> None:
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: dict[str, Any] | None = None
        self.bad_evals, self.stopped_early, self.history = 0, False, []
        self.last_loss, self.last_task_losses, self.last_metrics, self.last_images = 0.0, {}, {}, {}
        self.last_lrs: dict[str, float] = {}
        self.last_split, self.final_metrics = "val", {}
        self._acc_loss: list[float] = []
        self._acc_tasks: dict[str, list[float]] = defaultdict(list)

    def _build_loader(self, collate: Callable) -> None:
        t = self.cfg.train
        train = [b for b in self.bundles if b.config.train and "train" in b.splits]
        if not train:
            raise ValueError("no dataset has a training split; check data[].train and data[].split.fractions")
        sizes = [MultiLoader.batches_per_pass(len(b.splits["train"]), b.config.batch_size, self.world) for b in train]
        self.train_bundles = train
        self.plan = BatchPlan(sizes, t.sampling, t.temperature, t.seed)
        self.loader = MultiLoader([b.splits["train"] for b in train], [b.config.batch_size for b in train], self.plan,
                                  t.seed, self.rank, self.world, collate_fn=collate, num_workers=t.num_workers)
        self.collate = collate
        self.steps_per_epoch = max(1, len(self.plan) // t.grad_accum)
        total = t.epochs * self.steps_per_epoch
        self.total_steps = min(total, t.max_steps) if t.max_steps else total

    def _wrap_ddp(self) -> nn.Module:
        if self.world <= 1:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Heads of tasks a batch does not label (and a frozen encoder) get no gradient: DDP must look for them.
        unused = len(self.model.tasks) > 1 or self.cfg.train.freeze_encoder_epochs > 0
        return nn.parallel.DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=unused)

    def _default_callbacks(self, quiet: bool) -> None:
        if not distributed.is_main():
            return
        if self.cfg.output.tensorboard:
            tb = TensorBoardCallback(self.run_dir / "tb", self.cfg.output.log_images)
            for event in ("on_step_end", "on_eval_end", "on_train_end"):
                self.add_callback(event, getattr(tb, event))
        bar = ProgressCallback(disable=quiet or not sys.stderr.isatty())
        for event in ("on_train_start", "on_step_end", "on_train_end"):
            self.add_callback(event, getattr(bar, event))

    def add_callback(self, event: str, fn: Callable[[Trainer], None]) -> None:
        """Call ``fn(trainer)`` on ``event``."""
        self.callbacks[event].append(fn)

    def trigger(self, event: str) -> None:
        """Run the callbacks of ``event``."""
        for fn in self.callbacks.get(event, []):
            fn(self)

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        """Train until ``max_steps`` / ``epochs`` or early stopping; then evaluate the test splits."""
        start = time.perf_counter()
        if distributed.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(run_config_yaml(self.cfg), encoding="utf-8")
        self.trigger("on_train_start")
        while self.step < self.total_steps and not self.stopped_early:
            self._train_epoch()
            self._end_epoch(finished=self.batch_in_epoch == 0)
        test, _ = self._evaluate("test")
        self.final_metrics = {**self.last_metrics_of("val"), **test}
        self.trigger("on_train_end")
        result = TrainResult(str(self.run_dir), self.step, self.epoch, self.final_metrics, self.best, self.history,
                             self.stopped_early, time.perf_counter() - start)
        if distributed.is_main():
            (self.run_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=float))
        return result

    def last_metrics_of(self, split: str) -> dict[str, float]:
        """The latest evaluation's metrics of ``split``."""
        return {k: v for k, v in (self.history[-1] if self.history else {}).items() if k.startswith(split + "/")}

    def _set_modes(self) -> None:
        freeze = self.epoch < self.cfg.train.freeze_encoder_epochs
        if freeze and not self.model.encoder_frozen:
            self.model.freeze_encoder()
        elif not freeze and self.model.encoder_frozen:
            self.model.unfreeze_encoder()
        self.model.train()
        if self.cfg.train.norm_eval:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _train_epoch(self) -> None:
        accum = self.cfg.train.grad_accum
        n_batches = self.steps_per_epoch * accum
        self._set_modes()
        for b, (i, batch) in enumerate(self.loader.epoch(self.epoch, self.batch_in_epoch), self.batch_in_epoch):
            if b >= n_batches:
                break
            self._micro_step(self.train_bundles[i], batch, accum)
            if (b + 1) % accum:
                continue
            self._optimizer_step()
            self.batch_in_epoch = (b + 1) % n_batches
            every = self.cfg.output.checkpoint_every
            if every and self.step % every == 0 and self.batch_in_epoch:
                self.save("last.pt")
            if self.step >= self.total_steps:
                return
        self.batch_in_epoch = 0

    def _micro_step(self, bundle: Any, batch: dict[str, Any], accum: int) -> None:
        batch = move_batch(batch, self.device)
        targets = bundle.mapping.targets(batch, bundle.name)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            outputs = self.net(batch["image"], pad_mask=batch.get("pad_mask"), tasks=list(targets))
        loss, parts = self.objective(outputs, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {self.step}: non-finite loss {parts} on dataset {bundle.name!r}")
        self.scaler.scale(loss / accum).backward()
        self._acc_loss.append(float(loss.detach()))
        for task, value in parts.items():
            self._acc_tasks[task].append(value)

    def _optimizer_step(self) -> None:
        clip = self.cfg.train.clip_grad
        if clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        self.scheduler.step()
        self.step += 1
        self.last_loss = float(np.mean(self._acc_loss)) if self._acc_loss else math.nan
        self.last_task_losses = {t: float(np.mean(v)) for t, v in self._acc_tasks.items()}
        self._acc_loss, self._acc_tasks = [], defaultdict(list)
        self.trigger("on_step_end")

    def _end_epoch(self, finished: bool) -> None:
        """Evaluate and save; an epoch cut short by ``max_steps`` keeps its position, so a resume continues it."""
        self.epoch += int(finished)
        last = self.step >= self.total_steps or self.epoch >= self.cfg.train.epochs
        if self.epoch % self.cfg.train.eval_every == 0 or last:
            metrics, _ = self._evaluate("val")
            if metrics:
                self.history.append({"step": self.step, "epoch": self.epoch, **metrics})
                self._track_best(metrics)
        self.save("last.pt")

    def _evaluate(self, split: str) -> tuple[dict[str, float], dict]:
        keep = self.cfg.output.log_images and distributed.is_main()
        metrics, images = evaluate(self.model, self.bundles, split, self.objective, self.device, self.collate,
                                   keep_images=keep)
        self._set_modes()
        if metrics:
            self.last_metrics, self.last_images, self.last_split = metrics, images, split
            if distributed.is_main():
                with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"split": split, "step": self.step, "epoch": self.epoch, **metrics}) + "\n")
            self.trigger("on_eval_end")
        return metrics, images

    def _track_best(self, metrics: dict[str, float]) -> None:
        t = self.cfg.train
        name, mode = (t.best_metric, t.best_mode) if t.best_metric else ("val/loss", "min")
        if name not in metrics:
            raise KeyError(f"train.best_metric: {name!r} is not among the evaluation metrics {sorted(metrics)}")
        value = metrics[name]
        better = self.best is None or (value < self.best["value"] if mode == "min" else value > self.best["value"])
        if better and math.isfinite(value):
            self.best = {"metric": name, "value": float(value), "step": self.step, "epoch": self.epoch}
            self.save("best.pt")
        es = t.early_stopping
        if es.metric is not None:
            self._early_stop(metrics, es)

    def _early_stop(self, metrics: dict[str, float], es: Any) -> None:
        if es.metric not in metrics:
            raise KeyError(f"train.early_stopping.metric: {es.metric!r} is not among {sorted(metrics)}")
        value, ref = metrics[es.metric], getattr(self, "_es_best", None)
        improved = ref is None or (value < ref - es.min_delta if es.mode == "min" else value > ref + es.min_delta)
        if improved:
            self._es_best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        if self.bad_evals >= es.patience:
            log.info("early stopping at step %d: %s did not improve for %d evaluations", self.step, es.metric,
                     self.bad_evals)
            self.stopped_early = True

    # ----------------------------------------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """The checkpoint dict (see :mod:`medzoo.train.checkpoint`)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": capture_rng(),
                "step": self.step, "epoch": self.epoch, "batch": self.batch_in_epoch, "best": self.best,
                "early_stopping": {"bad_evals": self.bad_evals, "best": getattr(self, "_es_best", None),
                                   "stopped": self.stopped_early},
                "history": json.dumps(self.history), "config": run_config_yaml(self.cfg),
                "preprocessing": recorded_preprocessing(self.bundles), "versions": runtime_versions()}

    def save(self, name: str) -> Path | None:
        """Write a checkpoint into the run folder (rank 0 only)."""
        if not distributed.is_main():
            return None
        return save_checkpoint(self.run_dir / name, self.state())

    def load_state(self, ckpt: dict[str, Any]) -> None:
        """Restore a checkpoint written by :meth:`state` (resume)."""
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.batch_in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch"])
        self.best = ckpt.get("best")
        es = ckpt.get("early_stopping") or {}
        self.bad_evals, self.stopped_early = int(es.get("bad_evals", 0)), bool(es.get("stopped", False))
        if es.get("best") is not None:
            self._es_best = es["best"]
        self.history = json.loads(ckpt.get("history") or "[]")
        restore_rng(ckpt["rng"])
        log.info("resumed at step %d (epoch %d, batch %d)", self.step, self.epoch, self.batch_in_epoch)


def fit(cfg: RunConfig | str | Path | dict, overrides: Sequence[str] = (), *, resume: bool = False,
        quiet: bool = True, callbacks: dict[str, list[Callable]] | None = None) -> TrainResult:
    """Build a :class:`Trainer` and run it; returns the :class:`TrainResult` (metrics, best, history).

    Example:
        >>> res = fit("configs/experiments/finetune_tb.yaml", ["train.max_steps=2"])  # doctest: +SKIP
        >>> sorted(res.metrics)[:2]  # doctest: +SKIP
    """
    return Trainer(cfg, overrides, resume=resume, quiet=quiet, callbacks=callbacks).fit()
