"""Output writers: prediction tables (CSV, JSON), masks, heatmap overlays (PNG), 3D montages and NIfTI heatmaps.

- Prediction rows (``predictions.csv``, see :mod:`medzoo.infer.sink`): one row per (input, task, label) with the
  probability (or value), the threshold and the decision; segmentation rows give each label's voxel count.
- Prediction records (``predictions.jsonl`` / ``.json``): one per input with every task's label names,
  probabilities, decisions, per-slice probabilities and slice weights (series), mask paths.
- Masks: NIfTI with the input's own affine for volumes (uint8 labels), PNG for images (uint8 label values), each
  written atomically, and only directly inside the masks folder (an id or task name never leads elsewhere).
- Heatmaps: :func:`overlay_png` blends a heatmap over a grayscale image; :func:`montage_png` shows the three
  mid-slices of a volume with their heatmaps; :func:`write_heatmap_nifti` keeps a 3D heatmap in the input's space.

Example:
    >>> import numpy as np
    >>> rgb = overlay_rgb(np.zeros((4, 4)), np.ones((4, 4)), alpha=1.0)
    >>> rgb.shape, rgb.dtype
    ((4, 4, 3), dtype('uint8'))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medzoo.data.imageio import write_nifti, write_png

__all__ = [
    "CSV_COLUMNS", "NonFiniteOutputError", "check_finite_outputs", "heat_colors", "montage_png", "output_record",
    "overlay_png", "overlay_rgb", "prediction_rows", "write_heatmap_nifti", "write_masks",
]

CSV_COLUMNS = ["input", "path", "task", "type", "label", "probability", "threshold", "decision", "value", "voxels"]


class NonFiniteOutputError(ValueError):
    """A model output is NaN or infinite: thresholding it would give confident-looking negatives."""


# --------------------------------------------------------------------------------------------- prediction tables
def check_finite_outputs(outputs: dict[str, Any], name: str) -> None:
    """Refuse NaN or infinite probabilities or values (``TaskOutput`` fields), naming the input, task and labels.

    ``NaN >= threshold`` is False and ``argmax`` of NaNs is 0, so non-finite outputs would otherwise be written as
    negative decisions and background masks.

    Raises:
        NonFiniteOutputError: some output is not finite.
    """
    bad = []
    for task, o in outputs.items():
        for field, axis in (("probs", 0), ("values", 0), ("slice_probs", -1)):  # the axis of the labels
            arr = getattr(o, field, None)
            if arr is None or np.isfinite(arr).all():
                continue
            per_label = np.moveaxis(np.asarray(arr), axis, 0).reshape(len(o.labels), -1)
            bad.append(f"{task} {field} {[lab for lab, ok in zip(o.labels, np.isfinite(per_label).all(1)) if not ok]}")
    if bad:
        raise NonFiniteOutputError(f"{name}: the model produced NaN or infinite outputs ({'; '.join(bad)}); no "
                                   "decision is written for them. Check the weights and the input's intensities")


def write_masks(folder: Path, item: Any, outputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
    """Write each segmentation output's label map (atomically) as ``folder/{id}_{task}.nii.gz`` (volumes) or
    ``.png``; returns ``{task: path}``.

    Raises:
        ValueError: a name that would put the mask anywhere but directly inside ``folder``.
    """
    files = {}
    for task, o in outputs.items():
        if o.type != "segmentation":
            continue
        labels = o.decisions()
        if item.kind == "volume":
            path = _inside(folder, f"{item.id}_{task}.nii.gz")
            files[task] = str(write_nifti(path, labels, meta.get("affine", np.eye(4))))
        else:
            files[task] = str(write_png(_inside(folder, f"{item.id}_{task}.png"), labels.astype(np.uint8)))
    return files


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused unless it resolves to a file directly inside ``folder``."""
    path = Path(folder) / name
    if os.sep in name or (os.altsep and os.altsep in name) or path.resolve().parent != Path(folder).resolve():
        raise ValueError(f"output name {name!r} would be written outside {folder}; ids and task names must be "
                         "plain file names")
    return path


def _named(labels: Sequence[str], values: np.ndarray, cast: type = float) -> dict[str, Any]:
    return {lab: cast(v) for lab, v in zip(labels, np.asarray(values).tolist())}


def output_record(item: Any, outputs: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    """The JSON record of one input (plain lists and dicts)."""
    tasks: dict[str, Any] = {}
    for task, o in outputs.items():
        entry: dict[str, Any] = {"type": o.type, "labels": list(o.labels)}
        if o.type == "segmentation":
            dec = o.decisions()
            idx = range(len(o.labels)) if len(o.labels) > 1 else [1]
            entry.update(mask=files.get(task), voxels={lab: int((dec == k).sum()) for lab, k in zip(o.labels, idx)})
        elif o.type == "regression":
            entry["values"] = _named(o.labels, o.values)
        else:
            entry.update(probabilities=_named(o.labels, o.probs), decisions=_named(o.labels, o.decisions(), int))
            if o.type == "classification":
                entry["prediction"] = o.labels[int(np.argmax(o.probs))]
            if o.thresholds is not None:
                entry["thresholds"] = _named(o.labels, o.thresholds)
        if o.slice_probs is not None:
            entry["slice_" + ("values" if o.type == "regression" else "probabilities")] = o.slice_probs.tolist()
        if o.slice_weights is not None:
            entry["slice_weights"] = o.slice_weights.tolist()
        tasks[task] = entry
    return {"id": item.id, "path": item.path, "kind": item.kind, "source": item.source, "tasks": tasks}


def prediction_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """CSV rows (:data:`CSV_COLUMNS`) of one JSON record."""
    rows = []
    for task, e in record["tasks"].items():
        for lab in e["labels"]:
            row = dict.fromkeys(CSV_COLUMNS, "")
            row.update(input=record["id"], path=record["path"], task=task, type=e["type"], label=lab)
            if e["type"] == "segmentation":
                row["voxels"] = e["voxels"][lab]
            elif e["type"] == "regression":
                row["value"] = e["values"][lab]
            else:
                row.update(probability=e["probabilities"][lab], decision=e["decisions"][lab])
                row["threshold"] = e.get("thresholds", {}).get(lab, "")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------- heatmaps
def heat_colors(heat: np.ndarray) -> np.ndarray:
    """A blue-to-red colour ramp of a [0, 1] map: ``[*shape] -> [*shape, 3]`` floats in [0, 1]."""
    h = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
    ramp = [np.clip(1.5 - np.abs(4.0 * h - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)]
    return np.stack(ramp, axis=-1)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def overlay_rgb(image: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend ``heat`` (any range, min-max scaled) over a grayscale ``image`` (min-max scaled).

    Args:
        image: ``[H, W]``.
        heat: ``[H, W]``, same shape.
        alpha: heatmap weight; each pixel is ``(1 - alpha) * gray + alpha * colour``.

    Returns:
        ``[H, W, 3]`` uint8.
    """
    image, heat = np.asarray(image), np.asarray(heat)
    if image.shape != heat.shape or image.ndim != 2:
        raise ValueError(f"overlay needs a 2D image and heatmap of one shape, got {image.shape} and {heat.shape}")
    gray = _unit(image)[..., None].repeat(3, axis=-1)
    rgb = (1.0 - alpha) * gray + alpha * heat_colors(_unit(heat))
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def _save_rgb(path: str | Path, rgb: np.ndarray) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(p, format="PNG")
    return p


def overlay_png(path: str | Path, image: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> Path:
    """Write :func:`overlay_rgb` as an RGB PNG."""
    return _save_rgb(path, overlay_rgb(image, heat, alpha))


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The three central slices ``[vol[X//2], vol[:, Y//2], vol[:, :, Z//2]]`` of ``[X, Y, Z]``."""
    v = np.asarray(volume)
    return [v[v.shape[0] // 2], v[:, v.shape[1] // 2], v[:, :, v.shape[2] // 2]]


def montage_rgb(volume: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Side-by-side overlays of the three mid-slices of ``[X, Y, Z]`` (panels padded to one height, black)."""
    volume, heat = np.asarray(volume), np.asarray(heat)
    if volume.shape != heat.shape or volume.ndim != 3:
        raise ValueError(f"montage needs a 3D volume and heatmap of one shape, got {volume.shape} and {heat.shape}")
    lo, hi = float(volume.min()), float(volume.max())
    hlo, hhi = float(heat.min()), float(heat.max())
    panels = []
    for img, h in zip(mid_slices(volume), mid_slices(heat)):
        g = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img, dtype=np.float64)
        c = (h - hlo) / (hhi - hlo) if hhi > hlo else np.zeros_like(h, dtype=np.float64)
        rgb = (1.0 - alpha) * g[..., None].repeat(3, axis=-1) + alpha * heat_colors(c)
        panels.append(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels]
    return np.concatenate(padded, axis=1)


def montage_png(path: str | Path, volume: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> Path:
    """Write :func:`montage_rgb` as an RGB PNG."""
    return _save_rgb(path, montage_rgb(volume, heat, alpha))


def write_heatmap_nifti(path: str | Path, heat: np.ndarray, affine: np.ndarray) -> Path:
    """Write a 3D heatmap ``[X, Y, Z]`` (float32) with the input's affine."""
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 3:
        raise ValueError(f"a NIfTI heatmap must be 3D [X, Y, Z], got shape {h.shape}")
    return write_nifti(path, h, affine)
