"""Shared pieces of the loss modules: the ``LOSSES`` registry, reductions and NaN masking helpers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medzoo.registry import Registry

LOSSES = Registry("loss")
_REDUCTIONS = ("mean", "sum", "none")
WeightLike = Tensor | Sequence[float] | None


# ----------------------------------------------------------------------------------------------------------- helpers
def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _as_weight(weight: WeightLike, n: int, name: str) -> Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}] (one value per output), got {tuple(w.shape)}")
    return w


def _valid_mask(targets: Tensor) -> Tensor:
    return ~torch.isnan(targets) if targets.is_floating_point() else torch.ones_like(targets, dtype=torch.bool)


def _reduce(elem: Tensor, valid: Tensor, reduction: str, weight: Tensor | None = None) -> Tensor:
    """Reduce per-entry losses over the valid entries; invalid ones contribute exactly zero (and zero gradient)."""
    elem = torch.where(valid, elem, torch.zeros_like(elem))
    if weight is not None:
        elem = elem * weight
    if reduction == "none":
        return elem
    total = elem.sum()
    if reduction == "sum":
        return total
    denom = valid.sum().to(elem.dtype) if weight is None else torch.where(valid, weight, 0).sum().to(elem.dtype)
    return torch.where(denom > 0, total / denom.clamp_min(torch.finfo(elem.dtype).tiny), total)


def _masked_float_targets(logits: Tensor, targets: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if logits.shape != targets.shape:
        raise ValueError(f"{name}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must match")
    valid = _valid_mask(targets)
    return valid, torch.where(valid, targets, torch.zeros_like(targets)).to(logits.dtype)


def _binary_targets(logits: Tensor, targets: Tensor, name: str) -> tuple[Tensor, Tensor]:
    valid, t = _masked_float_targets(logits, targets, name)
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"{name}: targets must lie in [0, 1] (NaN = unknown), got values in [{t.min()}, {t.max()}]")
    return valid, t


def _class_index(targets: Tensor, valid: Tensor, num_classes: int, name: str, ignore: int | None = None) -> Tensor:
    """Cast masked class targets to long after checking they are integral and in ``[0, num_classes)``."""
    t = torch.where(valid, targets, torch.zeros_like(targets))
    bad = (t != torch.round(t)) | (t < 0) | (t >= num_classes)
    if ignore is not None:
        bad &= t != ignore
    if bool(bad.any()):
        raise ValueError(
            f"{name}: class targets must be integers in [0, {num_classes})"
            + (f" or {ignore} (ignored)" if ignore is not None else "")
            + f", got {t[bad].flatten()[:5].tolist()}"
        )
    return t.long()


def _buffer(module: nn.Module, name: str, value: WeightLike) -> None:
    module.register_buffer(name, None if value is None else torch.as_tensor(value, dtype=torch.float32),
                           persistent=False)
