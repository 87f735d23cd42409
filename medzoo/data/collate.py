"""Batching sample dicts: pad slice series, build ``pad_mask``, fill missing labels with NaN.

Example:
    >>> import torch
    >>> a = {"image": torch.ones(2, 1, 4, 4), "label.covid": torch.tensor(2.0), "meta": {"series": True}}
    >>> b = {"image": torch.ones(3, 1, 4, 4), "meta": {"series": True}}
    >>> batch = collate([a, b])
    >>> batch["image"].shape, batch["pad_mask"].tolist(), batch["label.covid"].isnan().tolist()
    (torch.Size([2, 3, 1, 4, 4]), [[False, False, True], [False, False, False]], [False, True])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["collate"]


def _is_series(sample: dict[str, Any]) -> bool:
    return bool(sample.get("meta", {}).get("series", False))


def _pad_series(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    n_max = max(x.shape[0] for x in images)
    rest = images[0].shape[1:]
    out = images[0].new_zeros((len(images), n_max, *rest))
    pad_mask = torch.ones(len(images), n_max, dtype=torch.bool)
    for i, x in enumerate(images):
        if x.shape[1:] != rest:
            raise ValueError(f"collate: series sample {i} has slices of shape {tuple(x.shape[1:])}, sample 0 has "
                             f"{tuple(rest)}; resize slices to one size (slice_size)")
        out[i, : x.shape[0]] = x
        pad_mask[i, : x.shape[0]] = False
    return out, pad_mask


def _missing(value: torch.Tensor | None) -> bool:
    """Absent, or a NaN scalar (what ``label_tensor`` gives for an unknown label of any shape)."""
    return value is None or (value.ndim == 0 and bool(torch.isnan(value)))


def _stack_labels(samples: Sequence[dict[str, Any]], key: str) -> torch.Tensor:
    present = [s[key] for s in samples if not _missing(s.get(key))]
    shape, dtype = (present[0].shape if present else torch.Size()), torch.float32
    rows = []
    for i, s in enumerate(samples):
        if _missing(s.get(key)):
            rows.append(torch.full(shape, float("nan"), dtype=dtype))
            continue
        if s[key].shape != shape:
            raise ValueError(f"collate: {key} of sample {i} has shape {tuple(s[key].shape)}, expected {tuple(shape)}")
        rows.append(s[key].to(dtype))
    return torch.stack(rows)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate sample dicts from one dataset into a batch.

    Args:
        samples: dicts with ``image`` (``[C, *spatial]``, or ``[N, C, H, W]`` when ``meta["series"]``),
            ``label.<task>`` float tensors and ``meta``.

    Returns:
        ``image`` ``[B, C, *spatial]`` or ``[B, N_max, C, H, W]`` (zero padded); for series ``pad_mask``
        ``[B, N_max]`` bool, True at padding; each ``label.<task>`` stacked to ``[B, ...]`` float32, NaN rows for
        samples that lack the label (absent, or a NaN scalar standing for a missing vector or mask);
        ``meta`` a list of dicts.

    Raises:
        ValueError: mixing series and non-series samples, or shapes that cannot be stacked.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    kinds = {_is_series(s) for s in samples}
    if len(kinds) > 1:
        raise ValueError("collate: a batch mixes slice series and single images; batches come from one dataset")
    images = [torch.as_tensor(s["image"]) for s in samples]
    batch: dict[str, Any] = {}
    if kinds.pop():
        batch["image"], batch["pad_mask"] = _pad_series(images)
    else:
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) > 1:
            raise ValueError(f"collate: images of different shapes {sorted(shapes)}; use a preset with a fixed "
                             f"size or patch")
        batch["image"] = torch.stack(images)
    label_keys = sorted({k for s in samples for k in s if k.startswith("label.")})
    for key in label_keys:
        batch[key] = _stack_labels(samples, key)
    batch["meta"] = [s.get("meta", {}) for s in samples]
    return batch
