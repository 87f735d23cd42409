"""The Trainer: a short, linear multi-dataset multi-task loop; behaviour comes from config and callbacks.

Each batch comes from one dataset (:mod:`medzoo.train.sampling`); its labels are mapped by name onto model tasks
(:mod:`medzoo.train.data`), only those heads run, and their masked losses are weighted and summed
(:mod:`medzoo.train.objective`). Callbacks (minGPT style) hook ``on_train_start``, ``on_step_end``,
``on_eval_end`` and ``on_train_end``; TensorBoard and the progress bar are callbacks.

The run folder (``output.dir``) holds ``config.yaml`` (the resolved config), ``last.pt`` (every
``checkpoint_every`` steps and at each epoch end), ``best.pt`` (by ``train.best_metric``), ``metrics.jsonl`` (one
line of strict JSON per evaluation), ``result.json`` and ``tb/``. ``resume=True`` continues from ``last.pt``
exactly: model, optimizer, scheduler, scaler, every rank's RNG states, and the batch position within the epoch (the
data order is a function of (seed, epoch), the augmentation of (seed, epoch, index)); it refuses a changed config
unless ``force=True`` (:mod:`medzoo.train.resume`).

Under DDP (``torchrun``) there is one answer: validation and test batches are sharded over the ranks and
all-gathered, so every rank computes the metrics of a single-process evaluation; rank 0's batch-norm statistics are
broadcast before each evaluation; every stop decision (early stopping, ``max_minutes``, a non-finite loss) is taken
once and shared, so all ranks leave the loop at the same step; only rank 0 writes, and every rank waits for the
write (a barrier) before going on.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from medzoo.data.collate import collate
from medzoo.models import create_model
from medzoo.train import distributed, runtime
from medzoo.train.callbacks import ProgressCallback
from medzoo.train.class_weights import resolve_pos_weight
from medzoo.train.config import RunConfig, load_run_config, run_config_yaml
from medzoo.train.data import build_datasets
from medzoo.train.evaluate import evaluate, move_batch
from medzoo.train.init import apply_init
from medzoo.train.objective import Objective
from medzoo.train.optim import build_optimizer, build_scheduler
from medzoo.train.resume import check_resume, finite_or_none, prepare_run_dir, strict_json_line
from medzoo.train.sampling import BatchPlan, MultiLoader
from medzoo.train.state import CheckpointState
from medzoo.train.tb import TensorBoardCallback
from medzoo.utils.device import resolve_device
from medzoo.zoo.checkpoint import load_checkpoint

__all__ = ["NonFiniteLoss", "Trainer", "TrainResult", "fit"]

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
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)


class NonFiniteLoss(RuntimeError):
    """The training loss is NaN or infinite; training stops before the optimizer applies the step."""


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer(CheckpointState):
    """Trains a :class:`~medzoo.models.MultiTaskModel` as a :class:`~medzoo.train.config.RunConfig` says.

    Args:
        cfg: the run config (or a YAML path / mapping, loaded with ``overrides``).
        overrides: dotted ``--set`` overrides.
        resume: continue from ``<output.dir>/last.pt`` when it exists.
        force: resume even when the config differs from the checkpoint's (the differences are logged).
        quiet: no progress bar.
        callbacks: ``{event: [fn(trainer)]}`` added to the built-in ones.

    Raises:
        ConfigError: an invalid config, a task without any labelled training sample, an option the device cannot
            run, or (resume) a config that differs from the checkpoint's.
        DeviceError: a device this machine lacks.
    """

    def __init__(self, cfg: RunConfig | str | Path | dict, overrides: Sequence[str] = (), *, resume: bool = False,
                 force: bool = False, quiet: bool = False,
                 callbacks: dict[str, list[Callable]] | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, RunConfig) and not overrides else load_run_config(cfg, overrides)
        self.cfg = resolve_pos_weight(self.cfg)  # `pos_weight: auto` -> negatives/positives of the training split
        t = self.cfg.train
        self.device = resolve_device(t.device)
        runtime.check_execution(t, self.device)
        distributed.init_distributed(t.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        runtime.configure_backends(t, self.device)
        self.run_dir = Path(self.cfg.output.dir)
        ckpt = self._read_last(resume, force)
        _seed_all(t.seed)  # the same initial weights on every rank
        model = create_model(self.cfg.model).to(self.device)
        if ckpt is None:
            apply_init(model, self.cfg.init)
        self.bundles = build_datasets(self.cfg, model)
        self.loader_kwargs = runtime.loader_kwargs(t, self.device, self.world)
        self._build_loader(collate)
        self.objective = Objective(self.cfg.model, t.loss, self.world).to(self.device)
        self.eval_objective = Objective(self.cfg.model, t.loss).to(self.device)
        # Heads of tasks a batch does not label (and a frozen encoder) get no gradient: DDP must look for them.
        unused = len(model.tasks) > 1 or t.freeze_encoder_epochs > 0
        self.model, self.net = runtime.wrap_model(model, t, self.device, self.world, unused)
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, self.total_steps)
        self.scaler = runtime.grad_scaler(t.precision, self.device)
        if self.rank:
            _seed_all(t.seed + self.rank)  # each rank its own dropout masks
        self._reset_state()
        self.callbacks: dict[str, list[Callable]] = defaultdict(list)
        self._default_callbacks(quiet)
        for event, fns in (callbacks or {}).items():
            self.callbacks[event].extend(fns)
        if ckpt is not None:
            self.load_state(ckpt)

    # ----------------------------------------------------------------------------------------------- set-up
    def _read_last(self, resume: bool, force: bool) -> dict[str, Any] | None:
        """``last.pt`` when resuming: read by rank 0 and broadcast (no shared file system needed); the config
        check runs before anything is built."""
        path = self.run_dir / "last.pt"
        ckpt = load_checkpoint(path) if resume and distributed.is_main() and path.is_file() else None
        ckpt = distributed.from_main(ckpt)
        if resume and ckpt is None:
            log.info("no %s yet: starting a new run", path)
        if ckpt is not None:
            current = yaml.safe_load(run_config_yaml(self.cfg))
            self.config_changes = check_resume(ckpt.get("config") or "", current, path, force)
        return ckpt

    def _reset_state(self) -> None:
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: dict[str, Any] | None = None
        self.bad_evals, self.stopped_early, self.timed_out, self.history = 0, False, False, []
        self.last_loss, self.last_task_losses, self.last_metrics, self.last_images = 0.0, {}, {}, {}
        self.last_lrs: dict[str, float] = {}
        self.last_split, self.final_metrics = "val", {}
        self.resumed_step: int | None = None
        self._acc_loss: list[float] = []
        self._acc_tasks: dict[str, list[float]] = defaultdict(list)
        self._nonfinite: str | None = None
        self._eval_loaders: dict = {}
        self._start = time.perf_counter()

    def _build_loader(self, collate: Callable) -> None:
        t = self.cfg.train
        train = [b for b in self.bundles if b.config.train and "train" in b.splits]
        if not train:
            raise ValueError("no dataset has a training split; check data[].train and data[].split.fractions")
        sizes = [MultiLoader.batches_per_pass(len(b.splits["train"]), b.config.batch_size, self.world) for b in train]
        self.train_bundles = train
        self.plan = BatchPlan(sizes, t.sampling, t.temperature, t.seed)
        self.loader = MultiLoader([b.splits["train"] for b in train], [b.config.batch_size for b in train], self.plan,
                                  t.seed, self.rank, self.world, collate_fn=collate, **self.loader_kwargs)
        self.collate = collate
        self.steps_per_epoch = max(1, len(self.plan) // t.grad_accum)
        total = t.epochs * self.steps_per_epoch
        self.total_steps = min(total, t.max_steps) if t.max_steps else total

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
        """Train until ``max_steps`` / ``epochs``, early stopping or ``max_minutes``; then evaluate the test splits.

        Raises:
            NonFiniteLoss: a NaN or infinite training loss (on any rank); the message names the step and dataset.
        """
        self._start = time.perf_counter()
        if distributed.is_main():
            prepare_run_dir(self.run_dir, run_config_yaml(self.cfg), self.resumed_step)
        distributed.barrier()
        self.trigger("on_train_start")
        while self.step < self.total_steps and not self.stopped_early and not self.timed_out:
            self._train_epoch()
            self._end_epoch(finished=self.batch_in_epoch == 0)
        test, _ = self._evaluate("test")
        self.final_metrics = {**self.last_metrics_of("val"), **test}
        self.trigger("on_train_end")
        reason = "early_stopping" if self.stopped_early else ("max_minutes" if self.timed_out else None)
        result = TrainResult(str(self.run_dir), self.step, self.epoch, self.final_metrics, self.best, self.history,
                             self.stopped_early, time.perf_counter() - self._start, reason)
        if distributed.is_main():
            (self.run_dir / "result.json").write_text(json.dumps(finite_or_none(result.to_dict()), indent=2,
                                                                 allow_nan=False, default=float))
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
            if self.step >= self.total_steps or self.timed_out:
                return
        self.batch_in_epoch = 0

    def train_step(self, batches: Sequence[tuple[int, dict[str, Any]]]) -> float:
        """One optimizer step over ``batches`` (``(training dataset index, batch)``, gradients accumulated over
        them); returns the step's mean loss. :meth:`fit` runs the same steps from the epoch's batch plan."""
        for i, batch in batches:
            self._micro_step(self.train_bundles[i], batch, len(batches))
        self._optimizer_step()
        return self.last_loss

    def _micro_step(self, bundle: Any, batch: dict[str, Any], accum: int) -> None:
        batch = move_batch(batch, self.device)
        image = runtime.to_memory_format(batch["image"], self.cfg.train.channels_last)
        targets = bundle.mapping.targets(batch, bundle.name)
        with runtime.autocast(self.cfg.train.precision, self.device):
            outputs = self.net(image, pad_mask=batch.get("pad_mask"), tasks=list(targets))
        loss, parts = self.objective(outputs, targets)
        value = float(loss.detach())
        if not math.isfinite(value) and self._nonfinite is None:
            losses = ", ".join(f"{k} {v:.4g}" for k, v in parts.items())
            self._nonfinite = f"dataset {bundle.name!r} (task losses: {losses})"
        # Backward runs even then: under DDP every rank must reach the same gradient all-reduce.
        self.scaler.scale(loss / accum).backward()
        self._acc_loss.append(value)
        for task, v in parts.items():
            self._acc_tasks[task].append(v)

    def _stop_flags(self) -> tuple[bool, bool]:
        """(a non-finite loss on any rank, rank 0's clock past ``max_minutes``), agreed by every rank."""
        limit = self.cfg.train.max_minutes
        late = self.rank == 0 and limit is not None and time.perf_counter() - self._start > 60.0 * limit
        bad, late = distributed.any_rank([self._nonfinite is not None, late])
        return bad, late

    def _optimizer_step(self) -> None:
        bad, self.timed_out = self._stop_flags()
        if bad:
            where = self._nonfinite or "another rank (see its log)"
            raise NonFiniteLoss(f"optimizer step {self.step + 1}: the training loss is not finite on {where}; "
                                "stopped before applying it. Lower train.lr, set train.clip_grad, or check that "
                                "batch's inputs")
        if self.timed_out:
            log.info("train.max_minutes reached after step %d: evaluating and saving", self.step + 1)
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
        last = self.step >= self.total_steps or self.epoch >= self.cfg.train.epochs or self.timed_out
        if self.epoch % self.cfg.train.eval_every == 0 or last:
            metrics, _ = self._evaluate("val")
            if metrics:
                self.history.append({"step": self.step, "epoch": self.epoch, **metrics})
                self._track_best(metrics)
        if self.cfg.output.last_every_epoch or last:
            self.save("last.pt")

    def _evaluate(self, split: str) -> tuple[dict[str, float], dict]:
        distributed.broadcast_buffers(self.model)
        keep = self.cfg.output.log_images and distributed.is_main()
        with runtime.autocast(self.cfg.train.precision, self.device):
            metrics, images = evaluate(self.model, self.bundles, split, self.eval_objective, self.device,
                                       self.collate, keep_images=keep, loader_kwargs=self.loader_kwargs,
                                       loaders=self._eval_loaders)
        metrics = distributed.from_main(metrics)  # identical by construction; shared so every decision agrees
        self._set_modes()
        if metrics:
            self.last_metrics, self.last_images, self.last_split = metrics, images, split
            if distributed.is_main():
                record = {"split": split, "step": self.step, "epoch": self.epoch, **metrics}
                with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(strict_json_line(record) + "\n")
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
        self.stopped_early = bool(distributed.from_main(self.bad_evals >= es.patience))  # decided once, by rank 0
        if self.stopped_early:
            log.info("early stopping at step %d: %s did not improve for %d evaluations", self.step, es.metric,
                     self.bad_evals)


def fit(cfg: RunConfig | str | Path | dict, overrides: Sequence[str] = (), *, resume: bool = False,
        force: bool = False, quiet: bool = True, callbacks: dict[str, list[Callable]] | None = None) -> TrainResult:
    """Build a :class:`Trainer` and run it; returns the :class:`TrainResult` (metrics, best, history).

    Example:
        >>> res = fit("configs/experiments/finetune_tb.yaml", ["train.max_steps=2"])  # doctest: +SKIP
        >>> sorted(res.metrics)[:2]  # doctest: +SKIP
    """
    return Trainer(cfg, overrides, resume=resume, force=force, quiet=quiet, callbacks=callbacks).fit()
