"""Weakly supervised localisation: an image-level MIL loss for every image plus a pixel BCE for boxed images.

Following Li et al. 2018, a batch mixes images that carry only image labels with a few that also carry boxes:

- **MIL loss** (every image): the patch logits ``[B, K, h, w]`` are pooled to image logits ``[B, K]``
  (:func:`medzoo.heads.localization.mil_pool`; noisy-OR by default) and scored with the NaN-masked BCE of
  :func:`medzoo.train.losses.masked_bce` (mean over the valid labels).
- **Pixel loss** (only the (image, class) pairs that have a box): each box is rasterised onto the patch grid with
  :func:`medzoo.metrics.localization.box_to_mask` (a patch is inside when its centre is), patches inside are targets 1
  and patches outside 0. For a pair, the loss is the mean patch BCE, or with ``balanced=True`` (default) the
  average of the mean inside and the mean outside (boxes cover few patches). The batch's pixel loss is the mean
  over its boxed pairs; a batch without boxes has a pixel loss of exactly 0, and unboxed images never reach it.
- **Mix**: ``loss = mil + box_weight * pixel``.

Box sources (:func:`record_boxes`): NIH ``BBox_List_2017.csv`` (``(x, y, w, h)`` in the 1024-pixel image space;
the reader already maps ``Infiltrate`` to ``Infiltration``) and VinDr-CXR (per-radiologist ``(x_min, y_min, x_max,
y_max)`` in the original pixels; all radiologists' boxes are used). Box labels meet head labels through
:func:`medzoo.data.labels.canonical_label`.

Example:
    >>> import torch
    >>> logits = torch.zeros(2, 1, 4, 4)
    >>> masks, has_box = rasterize_boxes([[(0, (0, 0, 2, 2))], []], 1, (4, 4), (4, 4))
    >>> out = weak_loc_loss(logits, torch.tensor([[1.0], [0.0]]), masks, has_box)
    >>> sorted(out)
    ['loss', 'mil', 'pixel']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medzoo.data.labels import canonical_label
from medzoo.heads.localization import mil_pool
from medzoo.metrics.localization import box_to_mask
from medzoo.train.losses import masked_bce

__all__ = ["BoxList", "NIH_BOX_SPACE", "mil_loss", "pixel_loss", "rasterize_boxes", "record_boxes", "weak_loc_loss"]

log = logging.getLogger(__name__)

#: ``[(class index, (x, y, w, h))]`` for one image, in that image's box coordinate space.
BoxList = list[tuple[int, tuple[float, float, float, float]]]
#: NIH boxes are given in the 1024 x 1024 pixel space of the released PNGs (``(width, height)``).
NIH_BOX_SPACE = (1024.0, 1024.0)


def mil_loss(patch_logits: Tensor, targets: Tensor, pooling: str = "noisy_or", r: float = 5.0) -> Tensor:
    """Image-level BCE on MIL-pooled patch logits; NaN targets are masked.

    Args:
        patch_logits: ``[B, K, h, w]``.
        targets: ``[B, K]`` in {0, 1} or NaN (missing).
        pooling: MIL pooling (``noisy_or``, ``lse``, ``max``).
        r: sharpness of ``lse``.
    """
    return masked_bce(mil_pool(patch_logits, pooling, r), targets)


def pixel_loss(patch_logits: Tensor, masks: Tensor, has_box: Tensor, balanced: bool = True) -> Tensor:
    """Patch BCE inside (target 1) and outside (target 0) the boxes, over the boxed (image, class) pairs only.

    Args:
        patch_logits: ``[B, K, h, w]``.
        masks: ``[B, K, h, w]`` in {0, 1}: the rasterised boxes (ignored where ``has_box`` is False).
        has_box: ``[B, K]`` bool: which pairs carry a box.
        balanced: average the mean inside and the mean outside BCE (else the mean over all patches).

    Returns:
        A scalar: the mean over boxed pairs, exactly 0 when there is none (still connected to the graph).
    """
    if masks.shape != patch_logits.shape or has_box.shape != patch_logits.shape[:2]:
        raise ValueError(f"masks {tuple(masks.shape)} and has_box {tuple(has_box.shape)} must match patch logits "
                         f"{tuple(patch_logits.shape)} and its first two dims")
    sel = has_box.bool()
    if not sel.any():
        return patch_logits.sum() * 0.0
    logits, target = patch_logits[sel].flatten(1), masks[sel].flatten(1).to(patch_logits.dtype)  # [M, h*w]
    elem = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if not balanced:
        return elem.mean()
    n_in, n_out = target.sum(1), (1 - target).sum(1)
    mean_in = (elem * target).sum(1) / n_in.clamp(min=1)
    mean_out = (elem * (1 - target)).sum(1) / n_out.clamp(min=1)
    both = (n_in > 0) & (n_out > 0)
    per_pair = torch.where(both, 0.5 * (mean_in + mean_out), torch.where(n_in > 0, mean_in, mean_out))
    return per_pair.mean()


def weak_loc_loss(patch_logits: Tensor, targets: Tensor, masks: Tensor | None = None, has_box: Tensor | None = None,
                  box_weight: float = 1.0, pooling: str = "noisy_or", r: float = 5.0,
                  balanced: bool = True) -> dict[str, Tensor]:
    """The mixed loss ``mil + box_weight * pixel`` of one batch.

    Args:
        patch_logits: ``[B, K, h, w]`` (the localisation head's output).
        targets: ``[B, K]`` image labels (NaN = missing).
        masks: ``[B, K, h, w]`` rasterised boxes, or None when the batch has no boxes.
        has_box: ``[B, K]`` bool, or None.
        box_weight: weight of the pixel loss.
        pooling: MIL pooling; r: its ``lse`` sharpness.
        balanced: see :func:`pixel_loss`.

    Returns:
        ``{"loss", "mil", "pixel"}`` scalars.
    """
    mil = mil_loss(patch_logits, targets, pooling, r)
    if masks is None or has_box is None:
        pix = patch_logits.sum() * 0.0
    else:
        pix = pixel_loss(patch_logits, masks, has_box, balanced)
    return {"loss": mil + box_weight * pix, "mil": mil, "pixel": pix}


def rasterize_boxes(boxes: Sequence[BoxList], num_classes: int, grid: Sequence[int],
                    source_size: Sequence[float] | Sequence[Sequence[float]]) -> tuple[Tensor, Tensor]:
    """Rasterise each image's boxes onto the patch grid.

    Args:
        boxes: one :data:`BoxList` per image (empty for images without boxes).
        num_classes: K.
        grid: ``(h, w)`` of the patch map.
        source_size: ``(width, height)`` of the box coordinate space, one for all images or one per image
            (e.g. :data:`NIH_BOX_SPACE`).

    Returns:
        ``masks`` ``[B, K, h, w]`` float (the union of a class's boxes) and ``has_box`` ``[B, K]`` bool.
    """
    h, w = int(grid[0]), int(grid[1])
    sizes = list(source_size) if np.ndim(source_size) == 2 else [source_size] * len(boxes)
    if len(sizes) != len(boxes):
        raise ValueError(f"source_size has {len(sizes)} entries for {len(boxes)} images")
    masks = np.zeros((len(boxes), num_classes, h, w), dtype=np.float32)
    has = np.zeros((len(boxes), num_classes), dtype=bool)
    for i, (items, (sw, sh)) in enumerate(zip(boxes, sizes)):
        for k, box in items:
            if not 0 <= k < num_classes:
                raise ValueError(f"image {i}: box class index {k} outside [0, {num_classes})")
            masks[i, k] = np.maximum(masks[i, k], box_to_mask(box, (h, w), scale=(w / float(sw), h / float(sh))))
            has[i, k] = True
    return torch.from_numpy(masks), torch.from_numpy(has)


def _class_index(label: str, lookup: dict[str, int], where: str, unknown: str) -> int | None:
    k = lookup.get(canonical_label(label) or label)
    if k is None and unknown == "error":
        raise ValueError(f"{where}: box label {label!r} is not among the head's labels {sorted(lookup)}; pass "
                         "unknown='drop' to leave such boxes out")
    return k


def record_boxes(record: Any, label_names: Sequence[str], source: str = "nih", unknown: str = "error") -> BoxList:
    """The boxes of one reader record as a :data:`BoxList` over ``label_names``.

    Args:
        record: a record of ``open_dataset("nih-cxr14", ..., boxes=True)`` or ``open_dataset("vindr-cxr", ...)``.
        label_names: the head's labels (matched through :func:`canonical_label`).
        source: ``"nih"`` (``meta["boxes"]``: ``[{"label", "box": (x, y, w, h)}]``) or ``"vindr"``
            (``meta["boxes"]``: ``{rad_id: [{"label", "box": (x_min, y_min, x_max, y_max)}]}``).
        unknown: ``"error"`` (default) or ``"drop"`` (logged) for box labels that are not head labels.

    Returns:
        ``[(class index, (x, y, w, h))]``; NIH boxes stay in :data:`NIH_BOX_SPACE`, VinDr boxes in the original
        pixels (a zero-size VinDr box is widened to one pixel).
    """
    if unknown not in ("error", "drop"):
        raise ValueError(f"unknown must be 'error' or 'drop', got {unknown!r}")
    lookup = {canonical_label(n) or n: i for i, n in enumerate(label_names)}
    where = f"record {getattr(record, 'id', '?')}"
    raw = record.meta.get("boxes") or []
    if source == "nih":
        entries = [(b["label"], tuple(float(v) for v in b["box"])) for b in raw]
    elif source == "vindr":
        entries = []
        for rad_boxes in raw.values():
            for b in rad_boxes:
                x0, y0, x1, y1 = (float(v) for v in b["box"])
                entries.append((b["label"], (x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0))))
    else:
        raise ValueError(f"unknown box source {source!r}; expected 'nih' or 'vindr'")
    out: BoxList = []
    for label, box in entries:
        k = _class_index(label, lookup, where, unknown)
        if k is None:
            log.info("%s: box label %r is not a head label; dropped", where, label)
            continue
        out.append((k, box))
    return out
