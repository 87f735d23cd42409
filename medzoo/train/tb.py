"""TensorBoard logging as a Trainer callback: scalars per task and metric, learning rates, hparams, overlays.

Tags: ``train/loss``, ``train/loss/<task>``, ``lr/<group>`` (``encoder``, ``heads``) per optimizer step;
``<split>/<task>/<metric>`` and ``<split>/loss`` per evaluation; ``<split>/<task>/overlay`` images for
segmentation tasks (grey image, red = prediction, green = truth, yellow = both; the middle slice of a volume); and
the run's hyperparameters with the final metrics in the HParams plugin, written into the same event file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

__all__ = ["TensorBoardCallback", "overlay"]

log = logging.getLogger(__name__)


def overlay(image: Tensor, pred: Tensor, target: Tensor) -> Tensor:
    """An RGB ``[3, H, W]`` overlay of one sample: ``image [C, *S]``, ``pred [*S]``, ``target [1, *S]`` or ``[*S]``.

    Volumes show their middle depth slice; the image is min-max scaled to grey.
    """
    img = image[0].float()
    pred, target = pred.float(), target.float()
    if target.dim() == pred.dim() + 1:
        target = target[0]
    if img.dim() == 3:  # [D, H, W] -> middle slice
        mid = img.shape[0] // 2
        img, pred, target = img[mid], pred[mid], target[mid]
    lo, hi = float(img.min()), float(img.max())
    grey = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    rgb = torch.stack([grey, grey, grey]) * 0.6
    p, t = (pred > 0).float(), (target > 0).float()
    rgb[0] += 0.4 * p
    rgb[1] += 0.4 * t
    return rgb.clamp(0, 1)


def _hparams(cfg: Any) -> dict[str, Any]:
    t = cfg.train
    out = {"optimizer": t.optimizer, "lr": t.lr, "weight_decay": t.weight_decay, "head_lr_mult": t.head_lr_mult,
           "scheduler": t.scheduler.name, "warmup_steps": t.scheduler.warmup_steps, "epochs": t.epochs,
           "max_steps": t.max_steps or 0, "grad_accum": t.grad_accum, "sampling": t.sampling, "seed": t.seed,
           "freeze_encoder_epochs": t.freeze_encoder_epochs, "encoder": cfg.model.encoder.name,
           "init": cfg.init.source}
    out.update({f"batch_size/{d.name or d.kind}": d.batch_size for d in cfg.data})
    out.update({f"fraction/{d.name or d.kind}": d.fraction for d in cfg.data})
    return out


class TensorBoardCallback:
    """Writes a run's TensorBoard events to ``log_dir`` (rank 0 only; the Trainer registers it there)."""

    def __init__(self, log_dir: str | Path, log_images: bool = True) -> None:
        self.writer = SummaryWriter(str(log_dir))
        self.log_images = log_images

    def on_step_end(self, trainer: Any) -> None:
        step, w = trainer.step, self.writer
        w.add_scalar("train/loss", trainer.last_loss, step)
        for task, value in trainer.last_task_losses.items():
            w.add_scalar(f"train/loss/{task}", value, step)
        for name, lr in trainer.last_lrs.items():  # the rates this step used
            w.add_scalar(f"lr/{name}", lr, step)

    def on_eval_end(self, trainer: Any) -> None:
        for key, value in trainer.last_metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, trainer.step)
        if self.log_images:
            for task, (img, pred, target) in trainer.last_images.items():
                self.writer.add_image(f"{trainer.last_split}/{task}/overlay", overlay(img[0], pred[0], target[0]),
                                      trainer.step)
        self.writer.flush()

    def on_train_end(self, trainer: Any) -> None:
        final = {f"hparam/{k}": v for k, v in trainer.final_metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(v)}
        exp, ssi, sei = hparams(_hparams(trainer.cfg), final)
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)
        for key, value in final.items():
            self.writer.add_scalar(key, value, trainer.step)
        self.writer.flush()
        self.writer.close()
