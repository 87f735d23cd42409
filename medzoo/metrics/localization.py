"""Localisation metrics for heatmaps (CAM, Grad-CAM) against ground-truth masks or boxes.

- Soft Dice between a heatmap ``A`` in [0, 1] and a mask ``B``: ``2 sum(AB) / (sum(A^2) + sum(B^2))`` (the
  squared form of the V-Net Dice, Milletari et al. 2016), or with plain sums.
- IoU and Dice ``2|A∩B| / (|A| + |B|)`` after binarising the heatmap at its top k percent of cells (cells tied
  with the k-th percentile are all kept by default, so a score never depends on where the target lies).
- IoBB (Wang et al. 2017, ChestX-ray8): ``area(pred box ∩ GT) / area(pred box)``, with hit rates at
  ``T(IoBB) in {0.1, 0.25, 0.5, 0.75, 0.9}``.
- The pointing game (Zhang et al. 2016): is the heatmap's maximum inside the target?

Boxes are ``(x, y, w, h)`` in pixels, as in the NIH ``BBox_List_2017.csv`` (1024-pixel images); ``x`` runs along
columns and ``y`` along rows. All functions take numpy arrays or torch tensors and work on any number of
dimensions, except the box helpers, which are 2D.

Example:
    >>> import numpy as np
    >>> heat = np.array([[0.1, 0.9], [0.2, 0.8]])
    >>> localization_scores(heat, np.array([[0, 1], [0, 1]]), ks=(50,))["iou@50"]
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "IOBB_THRESHOLDS",
    "TIE_RULES",
    "binarize_top_k",
    "box_to_mask",
    "dice",
    "hit_rates",
    "iobb",
    "iou",
    "localization_scores",
    "mask_to_boxes",
    "minmax_normalize",
    "pointing_game",
    "soft_dice",
]

IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
"""The T(IoBB) thresholds of Wang et al. 2017."""

Box = Sequence[float]


def _array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty map, got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    return a


def _binary(x: Any, name: str) -> np.ndarray:
    a = _array(x, name)
    if not np.isin(a, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be binary (0/1 or bool); binarise heatmaps with binarize_top_k first")
    return a.astype(bool)


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")


def _is_box(target: Any, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and np.ndim(target) == 1 and len(target) == 4


def _target_mask(target: Any, shape: tuple[int, ...], scale: float | Sequence[float] = 1.0) -> np.ndarray:
    """A GT mask of ``shape`` from a mask or an ``(x, y, w, h)`` box."""
    if _is_box(target, shape):
        return box_to_mask(target, shape, scale)
    mask = _binary(target, "target mask")
    _same_shape(mask, np.empty(shape), "heatmap and target mask")
    return mask


# -------------------------------------------------------------------------------------------------- heatmaps
def minmax_normalize(heatmap: Any) -> np.ndarray:
    """Rescale to [0, 1] with ``(h - min) / (max - min)``; a constant map becomes zeros (it localises nothing).

    Example:
        >>> minmax_normalize(np.array([2.0, 4.0, 3.0]))
        array([0. , 1. , 0.5])
    """
    h = _array(heatmap, "heatmap")
    span = h.max() - h.min()
    return (h - h.min()) / span if span > 0 else np.zeros_like(h)


def soft_dice(heatmap: Any, mask: Any, squared: bool = True) -> float:
    """Soft Dice ``2 sum(AB) / (sum(A^2) + sum(B^2))``, or ``2 sum(AB) / (sum(A) + sum(B))`` with ``squared=False``.

    Args:
        heatmap: ``A``, values in [0, 1] (see :func:`minmax_normalize`).
        mask: ``B``, binary, same shape.
        squared: squared sums in the denominator (V-Net's form); False for plain sums.

    Returns:
        The score in [0, 1]; 1.0 when both maps are all zero.

    Example:
        >>> round(soft_dice(np.array([0.5, 1.0]), np.array([0, 1])), 4)
        0.8889
    """
    a, b = _array(heatmap, "heatmap"), _binary(mask, "mask").astype(np.float64)
    _same_shape(a, b, "heatmap and mask")
    if a.min() < -1e-6 or a.max() > 1 + 1e-6:
        raise ValueError(f"soft_dice needs a heatmap in [0, 1], got [{a.min():.4g}, {a.max():.4g}]; "
                         "normalise it first (minmax_normalize)")
    den = (a**2).sum() + (b**2).sum() if squared else a.sum() + b.sum()
    return float(2 * (a * b).sum() / den) if den > 0 else 1.0


TIE_RULES: tuple[str, ...] = ("include", "random", "first")
"""Tie rules of :func:`binarize_top_k`; ``"include"`` is the default."""


def binarize_top_k(heatmap: Any, k_percent: float, ties: str = "include", seed: int = 0) -> np.ndarray:
    """Keep the top ``k_percent`` of cells of a heatmap.

    ``n = ceil(k / 100 * size)`` cells are asked for (at least one). Cells tied with the n-th largest value (the
    exact zeros of a ReLU'd Grad-CAM, a flat plateau) are handled by ``ties``:

    - ``"include"`` (default): keep every cell ``>=`` the n-th largest value, the percentile threshold
      ``h >= percentile(h, 100 - k)``. It does not depend on where a cell is, so a mirrored heatmap gives the
      mirrored mask; with many tied cells it keeps more than k percent (``localization_scores`` reports the kept
      share as ``kept@k``).
    - ``"random"``: keep exactly n cells, the tied ones drawn uniformly without replacement with
      ``np.random.default_rng(seed)``; position-invariant in distribution, reproducible per seed.
    - ``"first"``: keep exactly n cells, ties broken in raster (C) order. This favours cells near the top-left
      (the upper lung zones of a chest X-ray), so scores depend on where the target is; kept for comparison with
      earlier results.

    Args:
        heatmap: any shape.
        k_percent: in (0, 100].
        ties: one of :data:`TIE_RULES`.
        seed: the draw of ``"random"``.

    Returns:
        A bool map of the heatmap's shape.

    Example:
        >>> binarize_top_k(np.array([0.1, 0.7, 0.7, 0.2]), 25).tolist()
        [False, True, True, False]
        >>> binarize_top_k(np.array([0.1, 0.7, 0.7, 0.2]), 25, ties="first").tolist()
        [False, True, False, False]
        >>> int(binarize_top_k(np.array([0.1, 0.7, 0.7, 0.2]), 25, ties="random").sum())
        1
    """
    h = _array(heatmap, "heatmap")
    if not 0 < k_percent <= 100:
        raise ValueError(f"k_percent must lie in (0, 100], got {k_percent}")
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    flat = h.ravel()
    n = max(1, math.ceil(k_percent * flat.size / 100 - 1e-9))
    if ties == "first":
        keep = np.zeros(flat.size, dtype=bool)
        keep[np.argsort(-flat, kind="stable")[:n]] = True
        return keep.reshape(h.shape)
    value = np.partition(flat, flat.size - n)[flat.size - n]
    if ties == "include":
        return h >= value
    keep = flat > value
    tied = np.flatnonzero(flat == value)
    keep[np.random.default_rng(seed).choice(tied, size=n - int(keep.sum()), replace=False)] = True
    return keep.reshape(h.shape)


def iou(pred: Any, target: Any) -> float:
    """IoU ``|P∩T| / |P∪T|`` of two binary maps; 1.0 when both are empty.

    Example:
        >>> iou(np.array([1, 1, 0]), np.array([0, 1, 1]))
        0.3333333333333333
    """
    p, t = _binary(pred, "pred"), _binary(target, "target")
    _same_shape(p, t, "pred and target")
    union = (p | t).sum()
    return float((p & t).sum() / union) if union else 1.0


def dice(pred: Any, target: Any) -> float:
    """Dice ``2|P∩T| / (|P| + |T|)`` of two binary maps; 1.0 when both are empty.

    Example:
        >>> dice(np.array([1, 1, 0]), np.array([0, 1, 1]))
        0.5
    """
    p, t = _binary(pred, "pred"), _binary(target, "target")
    _same_shape(p, t, "pred and target")
    total = p.sum() + t.sum()
    return float(2 * (p & t).sum() / total) if total else 1.0


# ----------------------------------------------------------------------------------------------------- boxes
def box_to_mask(box: Box, shape: Sequence[int], scale: float | Sequence[float] = 1.0) -> np.ndarray:
    """Rasterise an ``(x, y, w, h)`` box into a bool mask.

    The box is first scaled (``x, w`` by ``sx``; ``y, h`` by ``sy``), e.g. ``scale=224 / 1024`` for NIH boxes on a
    224-pixel heatmap. A pixel is inside when its centre is: column ``j`` when ``x <= j + 0.5 < x + w``, row ``i``
    when ``y <= i + 0.5 < y + h``. A box smaller than a pixel marks the pixel holding its centre. Parts outside
    the image are clipped; a box entirely outside is an error.

    Args:
        box: ``(x, y, w, h)`` in the source pixel coordinates, ``w, h > 0``.
        shape: ``(rows, cols)`` of the mask.
        scale: a float, or ``(sx, sy)``.

    Example:
        >>> box_to_mask((1, 0, 2, 1), (2, 4)).astype(int).tolist()
        [[0, 1, 1, 0], [0, 0, 0, 0]]
    """
    if len(shape) != 2 or len(box) != 4:
        raise ValueError(f"box_to_mask needs a 2D shape and an (x, y, w, h) box, got {tuple(shape)} and {box}")
    sx, sy = (float(scale), float(scale)) if np.ndim(scale) == 0 else (float(scale[0]), float(scale[1]))
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0 or sx <= 0 or sy <= 0:
        raise ValueError(f"box width/height and scale must be positive, got box {box}, scale {scale}")
    x, y, w, h = x * sx, y * sy, w * sx, h * sy
    rows, cols = np.arange(shape[0]) + 0.5, np.arange(shape[1]) + 0.5
    mask = ((rows >= y) & (rows < y + h))[:, None] & ((cols >= x) & (cols < x + w))[None, :]
    if not mask.any():
        ci, cj = int(math.floor(y + h / 2)), int(math.floor(x + w / 2))
        if not (0 <= ci < shape[0] and 0 <= cj < shape[1]):
            raise ValueError(f"box {box} (scale {scale}) lies outside an image of shape {tuple(shape)}")
        mask[ci, cj] = True
    return mask


def mask_to_boxes(binary: Any) -> list[tuple[int, int, int, int]]:
    """Bounding boxes ``(x, y, w, h)`` of the 8-connected regions of a 2D binary map, in raster order.

    Example:
        >>> mask_to_boxes(np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]]))
        [(0, 0, 1, 1), (2, 1, 1, 2)]
    """
    b = _binary(binary, "binary map")
    if b.ndim != 2:
        raise ValueError(f"mask_to_boxes needs a 2D map, got shape {b.shape}")
    labels, _ = ndimage.label(b, structure=np.ones((3, 3)))
    return [(s[1].start, s[0].start, s[1].stop - s[1].start, s[0].stop - s[0].start)
            for s in ndimage.find_objects(labels) if s is not None]


def iobb(pred_binary: Any, target: Any, region: str = "boxes", scale: float | Sequence[float] = 1.0) -> float:
    """Intersection over the detected bounding box (Wang et al. 2017): ``area(pred box ∩ GT) / area(pred box)``.

    Args:
        pred_binary: the binarised heatmap ``[H, W]``.
        target: a GT mask ``[H, W]`` or an ``(x, y, w, h)`` box (see :func:`box_to_mask` for ``scale``).
        region: ``"boxes"`` (Wang et al.): each 8-connected region of the prediction gives a box and the best box
            counts; ``"mask"``: the predicted cells themselves are the detected area.
        scale: box scale, as :func:`box_to_mask`.

    Returns:
        IoBB in [0, 1]; 0.0 for an empty prediction.

    Example:
        >>> iobb(np.array([[1, 1, 0, 0]] * 2), (1, 0, 3, 2))
        0.5
    """
    p = _binary(pred_binary, "pred_binary")
    gt = _target_mask(target, p.shape, scale)
    if region == "mask":
        return float((p & gt).sum() / p.sum()) if p.any() else 0.0
    if region != "boxes":
        raise ValueError(f"region must be 'boxes' or 'mask', got {region!r}")
    best = 0.0
    for x, y, w, h in mask_to_boxes(p):
        best = max(best, float(gt[y : y + h, x : x + w].sum() / (w * h)))
    return best


def hit_rates(values: Sequence[float], thresholds: Sequence[float] = IOBB_THRESHOLDS,
              strict: bool = True) -> dict[float, float]:
    """Fraction of cases whose score exceeds each threshold (a correct localisation when ``IoBB > T``).

    Args:
        values: one IoBB (or IoU) per case.
        thresholds: the T values.
        strict: ``>`` (default) or ``>=``.

    Example:
        >>> hit_rates([0.2, 0.5, 0.95], (0.1, 0.5))
        {0.1: 1.0, 0.5: 0.3333333333333333}
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("hit_rates needs at least one value")
    return {float(t): float(np.mean(v > t if strict else v >= t)) for t in thresholds}


# ---------------------------------------------------------------------------------------------------- scores
def pointing_game(heatmap: Any, target: Any, tolerance: float = 0.0, scale: float | Sequence[float] = 1.0) -> bool:
    """A hit when the heatmap's maximum lies inside the target (within ``tolerance`` pixels, Euclidean).

    If several cells share the maximum, all of them must be inside: a flat map does not score by luck.

    Args:
        heatmap: any shape.
        target: a mask of the same shape, or an ``(x, y, w, h)`` box for 2D heatmaps.
        tolerance: allowed distance in pixels from the target (Zhang et al. used 15).
        scale: box scale, as :func:`box_to_mask`.

    Example:
        >>> pointing_game(np.array([[0.1, 0.9], [0.2, 0.3]]), (1, 0, 1, 1))
        True
    """
    h = _array(heatmap, "heatmap")
    gt = _target_mask(target, h.shape, scale)
    if tolerance > 0:
        gt = ndimage.distance_transform_edt(~gt) <= tolerance
    return bool(gt[h == h.max()].all())


def localization_scores(heatmap: Any, target: Any, ks: Sequence[float] = (5, 10, 20, 50), ties: str = "include",
                        scale: float | Sequence[float] = 1.0, normalize: bool = False,
                        seed: int = 0) -> dict[str, float]:
    """All localisation scores of one heatmap against one target.

    Args:
        heatmap: values in [0, 1] for the soft Dice (or pass ``normalize=True`` for min-max scaling first).
        target: a binary mask of the same shape or an ``(x, y, w, h)`` box (2D).
        ks: top-k percentages for binarisation.
        ties: tie rule of :func:`binarize_top_k` (default ``"include"``: position-invariant).
        scale: box scale, as :func:`box_to_mask`.
        normalize: min-max normalise the heatmap first.
        seed: the draw of ``ties="random"``.

    Returns:
        ``soft_dice``, ``soft_dice_plain``, ``pointing`` (1.0 or 0.0), and per k: ``iou@k``, ``dice@k``,
        ``kept@k`` (the share of cells kept, above k percent when ties are included) and, for 2D maps, ``iobb@k``.

    Example:
        >>> s = localization_scores(np.array([[0.1, 0.9], [0.2, 0.8]]), (1, 0, 1, 2), ks=(25,))
        >>> s["iou@25"], s["dice@25"], s["pointing"]
        (0.5, 0.6666666666666666, 1.0)
    """
    h = minmax_normalize(heatmap) if normalize else _array(heatmap, "heatmap")
    gt = _target_mask(target, h.shape, scale)
    if not gt.any():
        raise ValueError("the target mask is empty; localisation needs a non-empty target")
    out = {"soft_dice": soft_dice(h, gt), "soft_dice_plain": soft_dice(h, gt, squared=False),
           "pointing": float(pointing_game(h, gt))}
    for k in ks:
        pred = binarize_top_k(h, k, ties, seed)
        tag = f"{k:g}"
        out[f"iou@{tag}"], out[f"dice@{tag}"] = iou(pred, gt), dice(pred, gt)
        out[f"kept@{tag}"] = float(pred.mean())
        if h.ndim == 2:
            out[f"iobb@{tag}"] = iobb(pred, gt)
    return out
