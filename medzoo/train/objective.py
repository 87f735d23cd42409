"""The multi-task objective: one registered loss per task, masked targets, per-task weights, DDP normalisation.

Only the tasks a batch labels are run and scored. Default losses by head type: ``classification`` -> ``ce``,
``multilabel`` -> ``bce``, ``regression`` -> ``mse``, ``segmentation`` -> ``dice_ce`` (sigmoid for one class),
``medicalnet_seg`` -> ``dice_ce`` with the labels nearest-downsampled to the logits (as MedicalNet trains).

Under DDP a loss with ``reduction="mean"`` is computed as a sum divided by the number of valid
labels summed over all ranks, times the world size (DDP averages gradients), so that two ranks with batch B equal
one process with batch 2B even when the ranks hold different numbers of labels.

Example:
    >>> import torch
    >>> from medzoo.config import load_config
    >>> mc = load_config({"tasks": {"tb": {"type": "classification", "num_classes": 2, "level": "image"}}})
    >>> obj = Objective(mc, {})
    >>> total, parts = obj({"tb": torch.zeros(2, 2)}, {"tb": torch.tensor([1.0, float("nan")])})
    >>> round(float(total), 4), list(parts)
    (0.6931, ['tb'])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from medzoo.config import ConfigError, ModelConfig
from medzoo.train.config import LossConfig
from medzoo.train.losses import LOSSES, count_valid

__all__ = ["Objective", "default_loss"]

_DEFAULTS = {"classification": "ce", "multilabel": "bce", "regression": "mse", "segmentation": "dice_ce",
             "medicalnet_seg": "dice_ce"}


def default_loss(task_type: str, num_outputs: int) -> LossConfig:
    """The default loss of a head type."""
    name = _DEFAULTS.get(task_type, "mse")
    options: dict = {}
    if task_type in ("segmentation", "medicalnet_seg"):
        options = {"sigmoid": True} if num_outputs == 1 else {}
        if task_type == "medicalnet_seg":
            options["match_size"] = True
    return LossConfig(type=name, options=options)


class Objective(nn.Module):
    """Per-task losses and weights.

    Args:
        model_cfg: the model's config (task types and sizes).
        losses: ``train.loss`` entries by task (type, options, weight); missing tasks use :func:`default_loss`.
        world_size: DDP world size (> 1 switches mean losses to the global-count normalisation).
    """

    def __init__(self, model_cfg: ModelConfig, losses: Mapping[str, LossConfig], world_size: int = 1) -> None:
        super().__init__()
        self.weights: dict[str, float] = {}
        fns = {}
        for task, tc in model_cfg.tasks.items():
            n = tc.num_classes or len(tc.labels or tc.outputs or [0])
            lc = losses.get(task) or default_loss(tc.type, n)
            if lc.type is None:
                lc = LossConfig(default_loss(tc.type, n).type, lc.options, lc.weight)
            if lc.type not in LOSSES:
                raise ConfigError(f"train.loss.{task}.type: {LOSSES._unknown_message(lc.type)}")
            try:
                fns[task] = LOSSES.get(lc.type)(**lc.options)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"train.loss.{task}.options: {err}") from None
            self.weights[task] = float(lc.weight)
        self.fns = nn.ModuleDict(fns)
        self.world_size = int(world_size)

    def task_loss(self, task: str, logits: Tensor, target: Tensor) -> Tensor:
        """The loss of one task (globally normalised under DDP where the loss allows it)."""
        fn = self.fns[task]
        target = target.to(logits.device)
        if self.world_size > 1 and getattr(fn, "reduction", None) == "mean":
            fn.reduction = "sum"
            try:
                total = fn(logits, target)
            finally:
                fn.reduction = "mean"
            count = count_valid(target, getattr(fn, "class_weight", None)).to(logits.device)
            torch.distributed.all_reduce(count)
            return total * self.world_size / count.clamp_min(1.0)
        return fn(logits, target)

    def forward(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``(weighted sum of task losses, {task: loss value})`` over the tasks in ``targets``."""
        total, parts = None, {}
        for task, target in targets.items():
            loss = self.task_loss(task, outputs[task].float(), target)
            parts[task] = float(loss.detach())
            weighted = self.weights[task] * loss
            total = weighted if total is None else total + weighted
        if total is None:
            raise ValueError("a batch with no labelled task reached the objective")
        return total, parts
