"""Optimizer and learning-rate schedule from ``train:`` config.

The encoder trains at ``lr`` and the heads (and aggregator) at ``lr * head_lr_mult`` (MedicalNet used 100x on the
new layers), through ``MultiTaskModel.param_groups``. The schedule is a per-step multiplier: linear warm-up from
``1 / warmup_steps`` to 1, then cosine decay towards ``min_lr_ratio`` (reached just after the last step),
exponential decay ``gamma^k``, or constant.

Example:
    >>> lr_factor(0, total_steps=10, name="cosine", warmup_steps=2)
    0.5
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medzoo.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over the model's parameter groups."""
    groups = model.param_groups(cfg.lr, cfg.head_lr_mult) if hasattr(model, "param_groups") else [
        {"name": "all", "params": list(model.parameters()), "lr": cfg.lr}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, name: str = "cosine", warmup_steps: int = 0, min_lr_ratio: float = 0.0,
              gamma: float = 0.999) -> float:
    """The multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    k = step - warmup_steps
    if name == "cosine":
        span = max(1, total_steps - warmup_steps)  # the last step still has a (small) non-zero rate
        progress = min(1.0, k / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if name == "exponential":
        return gamma**k
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping once per optimizer step over ``total_steps`` steps."""
    s = cfg.scheduler

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, s.name, s.warmup_steps, s.min_lr_ratio, s.gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
