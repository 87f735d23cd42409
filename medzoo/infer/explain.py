"""Explain one input file: CAM or Grad-CAM through the model's preprocessing contract, written as overlays.

The input goes through the same pipeline as in ``medzoo predict`` (:func:`medzoo.data.pipeline.prepare`); a model
without a contract for the input's kind is refused unless one is given.

- an image gives ``{stem}.png``: the heatmap over the image, at the image's own size;
- a volume gives ``{stem}.nii.gz`` (the heatmap on the input's grid, with its affine) and ``{stem}_montage.png``
  (the three mid-slices);
- a slice series gives ``{stem}_slice{i:03d}.png`` per slice and the aggregator's slice weights in
  ``{stem}.json``.

``stem`` is ``{input id}_{task}_{label}_{method}``. With several models the heatmaps (each min-max normalised)
are averaged.

Example:
    >>> # res = explain_input([model], "cxr.png", task="findings", label="Effusion", method="gradcam")
    >>> # write_explanation(res, "out/")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medzoo.data.pipeline import DEFAULT_MAX_VOXELS, prepare
from medzoo.infer.cam import explain
from medzoo.infer.inputs import DicomOptions, LoadedInput, classify_path, load_input
from medzoo.infer.writers import montage_png, overlay_png, write_heatmap_nifti
from medzoo.metrics.localization import minmax_normalize
from medzoo.models import LEVEL_INPUT
from medzoo.utils.jsonio import dumps_strict
from medzoo.zoo.preprocessing import contracts_of, require_contract

__all__ = ["ExplainResult", "explain_input", "write_explanation"]


@dataclass
class ExplainResult:
    """A heatmap on the input's grid (``[X, Y, Z]``, ``[H, W]`` or ``[N, H, W]``) with what produced it."""

    loaded: LoadedInput
    heatmap: np.ndarray
    task: str
    label: str
    method: str
    slice_weights: np.ndarray | None = None


def _heatmap(model: nn.Module, loaded: LoadedInput, task: str, label: str | None, method: str,
             contract: Any) -> tuple[np.ndarray, str, np.ndarray | None]:
    kind, arr, meta = loaded.item.kind, loaded.array, loaded.meta
    if task not in model.tasks:
        raise KeyError(f"unknown task {task!r}; the model's tasks are {list(model.tasks)}")
    wanted = LEVEL_INPUT[model.task_levels[task]]
    if wanted != kind:
        raise ValueError(f"task {task!r} reads {wanted} inputs ({model.task_levels[task]} level); "
                         f"{loaded.item.path} is a {kind}")
    contracts = contracts_of(contract if contract is not None else model)
    prep = prepare(require_contract(contracts, kind, "the model"), arr, meta, kind, "predict", loaded.item.id,
                   DEFAULT_MAX_VOXELS)
    e = explain(model, prep.tensor, task, label, method)
    if kind == "series":
        size = tuple(arr.shape[-2:])
        maps = torch.nn.functional.interpolate(e.maps[:, None], size=size, mode="bilinear", align_corners=False)
        heat = maps[:, 0].numpy()
    else:
        heat = prep.to_original(e.maps)[0]
    weights = None if e.slice_weights is None else e.slice_weights.numpy()
    return heat, e.label, weights


def explain_input(models: Sequence[nn.Module], path: str | Path, task: str, label: str | None = None,
                  method: str = "gradcam", preprocessing: Sequence[Any] | None = None,
                  dicom: DicomOptions | None = None) -> ExplainResult:
    """Explain ``task``/``label`` of one input file or folder.

    Args:
        models: one model, or several (their normalised heatmaps are averaged).
        path: a NIfTI, DICOM folder, PNG/JPEG or slice folder.
        task: the task to explain.
        label: a label name or index (None: the first model's top label).
        method: ``cam`` or ``gradcam``.
        preprocessing: per model, its contracts (``{kind: contract}``, a preset name or a YAML file); None entries
            (and None) use ``model.preprocessing``. A model with no contract for the input's kind is refused.
        dicom: how to read a DICOM input (series choice, uneven slices).
    """
    loaded = load_input(classify_path(path, dicom=dicom))
    pres = list(preprocessing) if preprocessing is not None else [None] * len(models)
    heats, weights = [], None
    for model, pre in zip(models, pres):
        heat, name, w = _heatmap(model, loaded, task, label, method, pre)
        label = name  # later members explain the same label
        heats.append(heat if len(models) == 1 else minmax_normalize(heat))
        weights = w if weights is None else weights
    return ExplainResult(loaded, np.mean(heats, axis=0), task, str(label), method, weights)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_explanation(result: ExplainResult, out_dir: str | Path, alpha: float = 0.4) -> list[Path]:
    """Write the overlays (and NIfTI heatmap for volumes); returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    item, arr = result.loaded.item, result.loaded.array
    stem = _safe(f"{item.id}_{result.task}_{result.label}_{result.method}")
    files: list[Path] = []
    if item.kind == "volume":
        files.append(write_heatmap_nifti(out / f"{stem}.nii.gz", result.heatmap, result.loaded.meta["affine"]))
        files.append(montage_png(out / f"{stem}_montage.png", arr[0], result.heatmap, alpha))
    elif item.kind == "image":
        files.append(overlay_png(out / f"{stem}.png", arr.astype(np.float64).mean(axis=0), result.heatmap, alpha))
    else:
        for i, (sl, heat) in enumerate(zip(arr, result.heatmap)):
            files.append(overlay_png(out / f"{stem}_slice{i:03d}.png", sl.astype(np.float64).mean(axis=0), heat,
                                     alpha))
    summary = {"input": item.path, "task": result.task, "label": result.label, "method": result.method,
               "files": [str(f) for f in files],
               "slice_weights": None if result.slice_weights is None else result.slice_weights.tolist()}
    summary_path = out / f"{stem}.json"
    summary_path.write_text(dumps_strict(summary, indent=2), encoding="utf-8")
    return [*files, summary_path]
