"""Heatmaps against dataset boxes (``medzoo evaluate --localization``): CAM / Grad-CAM of a multilabel task scored
on the boxes of NIH ChestX-ray14 (``BBox_List_2017.csv``, ``(x, y, w, h)``) and VinDr-CXR (``(x_min, y_min, x_max,
y_max)`` per radiologist, merged).

- :func:`score_heatmaps`: one row per (image, label) with the scores of
  :func:`medzoo.metrics.localization.localization_scores` (soft Dice, IoU and Dice at top-k percent, IoBB,
  pointing game). Top-k keeps every cell tied with the k-th percentile by default, so a box scores the same
  wherever it lies (``ties="first"``, raster order, favoured top-left boxes); ``kept@k`` reports the share kept;
- :func:`localization_summary`: per label, the mean of each score and the IoBB hit rates of Wang et al. 2017;
- :func:`localization_tables`: both tables for model references (one, or an ensemble of min-max normalised maps).

Example:
    >>> import numpy as np
    >>> from medzoo.data.manifest import Record
    >>> rec = Record("a", "p", "a.png", meta={"boxes": [{"label": "Mass", "box": (0, 0, 2, 2)}]})
    >>> rows = score_heatmaps(lambda r, lab: np.pad(np.ones((2, 2)), ((0, 2), (0, 2))), [rec], ["Mass"], ks=(25,))
    >>> rows[0]["iou@25"]
    1.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medzoo.data import open_dataset
from medzoo.data.contract import contract_for
from medzoo.data.imageio import read_image
from medzoo.data.labels import canonical_label
from medzoo.data.pipeline import prepare
from medzoo.infer.cam import explain
from medzoo.metrics.localization import IOBB_THRESHOLDS, box_to_mask, hit_rates, localization_scores
from medzoo.train.config import RunConfig, load_run_config
from medzoo.train.data import data_contract
from medzoo.train.weak_loc import NIH_BOX_SPACE
from medzoo.zoo.preprocessing import contracts_of, require_contract
from medzoo.zoo.resolver import ResolvedModel, resolve

__all__ = ["boxes_by_label", "localization_summary", "localization_tables", "model_heatmap_fn", "score_heatmaps"]

log = logging.getLogger(__name__)


def boxes_by_label(record: Any) -> dict[str, list[tuple[float, float, float, float]]]:
    """A record's boxes as ``{label: [(x, y, w, h), ...]}``.

    Reads NIH's ``meta["boxes"]`` (a list of ``{"label", "box": (x, y, w, h)}``) and VinDr's (``{radiologist:
    [{"label", "box": (x_min, y_min, x_max, y_max)}]}``, all radiologists together).
    """
    boxes = record.meta.get("boxes") or []
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    if isinstance(boxes, Mapping):  # VinDr: per radiologist, corner boxes
        for marks in boxes.values():
            for b in marks:
                x0, y0, x1, y1 = (float(v) for v in b["box"])
                out.setdefault(b["label"], []).append((x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)))
        return out
    for b in boxes:
        out.setdefault(b["label"], []).append(tuple(float(v) for v in b["box"]))
    return out


def _union_mask(boxes: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for b in boxes:
        mask |= box_to_mask(b, shape)
    return mask


def score_heatmaps(heatmap_fn: Callable[[Any, str], np.ndarray], records: Sequence[Any], labels: Sequence[str], *,
                   label_map: Mapping[str, str] | None = None, ks: Sequence[float] = (5, 10, 20, 50),
                   ties: str = "include", seed: int = 0) -> list[dict[str, Any]]:
    """Score heatmaps against the boxes of every record that has them.

    Args:
        heatmap_fn: ``(record, model_label) -> [H, W]`` heatmap at the image's own size (box coordinates).
        records: manifest records (NIH with ``boxes=True``, or VinDr).
        labels: the model's label names; boxes of other labels are left out.
        label_map: dataset label -> model label (e.g. ``{"Nodule/Mass": "Nodule"}``).
        ks: top-k percentages.
        ties: tie rule of :func:`medzoo.metrics.localization.binarize_top_k`: ``"include"`` (default; every cell
            tied with the k-th percentile is kept, so the score does not depend on where the box is), ``"random"``
            (seeded draw among tied cells) or ``"first"`` (raster order, the earlier rule).
        seed: the draw of ``ties="random"``.

    Returns:
        One row per (record, label): ``id``, ``label``, ``n_boxes``, ``ties`` and every score of
        :func:`~medzoo.metrics.localization.localization_scores` (heatmap min-max normalised; boxes of one label
        merged into one target).
    """
    label_map = dict(label_map or {})
    rows = []
    for rec in records:
        for ds_label, boxes in boxes_by_label(rec).items():
            label = label_map.get(ds_label, ds_label)
            if label not in labels:
                continue
            heat = np.asarray(heatmap_fn(rec, label), dtype=np.float64)
            if heat.ndim != 2:
                raise ValueError(f"record {rec.id}: localisation needs a 2D heatmap, got shape {heat.shape}")
            target = _union_mask(boxes, heat.shape)
            scores = localization_scores(heat, target, ks=ks, ties=ties, normalize=True, seed=seed)
            rows.append({"id": rec.id, "label": label, "n_boxes": len(boxes), "ties": ties, **scores})
    return rows


def model_heatmap_fn(model: Any, task: str, method: str = "gradcam",
                     preprocessing: Any = None) -> Callable[[Any, str], np.ndarray]:
    """A ``heatmap_fn`` for :func:`score_heatmaps`: read the record's image, apply the image contract
    (``preprocessing``: one contract or ``{kind: contract}``; default ``model.preprocessing``) through the one
    pipeline, explain ``task``/label with CAM or Grad-CAM, and map the heatmap back to the image's own size."""
    contract = require_contract(contracts_of(preprocessing if preprocessing is not None else model), "image",
                                "the model")

    def heatmap(record: Any, label: str) -> np.ndarray:
        arr, meta = read_image(record.image)
        prep = prepare(contract, arr, meta, "image", name=str(record.id))
        maps = explain(model, prep.tensor, task, label, method).maps
        return prep.to_original(maps)[0]

    return heatmap


def localization_summary(rows: Sequence[Mapping[str, Any]], iobb_k: float = 10,
                         thresholds: Sequence[float] = IOBB_THRESHOLDS) -> list[dict[str, Any]]:
    """Per label (and ``all``): the mean of every score, and the IoBB hit rates ``acc@T`` at ``iobb@{iobb_k}``.

    Returns:
        Rows ``{"label", "n", "ties", <score>: mean, "acc@T": fraction with IoBB > T}``.
    """
    if not rows:
        return []
    keys = [k for k in rows[0] if k not in ("id", "label", "n_boxes", "ties")]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["label"], []).append(r)
    groups["all"] = list(rows)
    out = []
    for label, rs in groups.items():
        row: dict[str, Any] = {"label": label, "n": len(rs), "ties": rs[0].get("ties")}
        row.update({k: float(np.mean([r[k] for r in rs])) for k in keys})
        key = f"iobb@{iobb_k:g}"
        if key in rs[0]:
            row.update({f"acc@{t:g}": v for t, v in hit_rates([r[key] for r in rs], thresholds).items()})
        out.append(row)
    return out


# -------------------------------------------------------------------------------------------- from references
def _contract(run: RunConfig, task: str, resolved: ResolvedModel) -> Any:
    """The image contract of a model for ``task``: the one its weights record, else that of the first dataset of
    the run config that labels ``task`` (its transform preset)."""
    if contract_for(resolved.preprocessing, "image") is not None:
        return resolved.preprocessing
    for i, d in enumerate(run.data):
        if task in d.tasks.values():
            return data_contract(run, i)
    return resolved.preprocessing


def _label_map(box_labels: set[str], labels: Sequence[str]) -> dict[str, str]:
    """Dataset box label -> model label, matched exactly or through the harmonised vocabulary."""
    out = {}
    for b in box_labels:
        hits = [lab for lab in labels if lab == b or (canonical_label(lab) or lab) == (canonical_label(b) or b)]
        if hits:
            out[b] = hits[0]
    return out


def _nih_boxes_in_pixels(records: Sequence[Any]) -> list[Any]:
    """NIH records whose boxes are rescaled from the 1024-px space to each image's own size (equal for the released
    1024-px PNGs; downsized copies need it)."""
    out = []
    for rec in records:
        with Image.open(rec.image) as im:
            w, h = im.size
        sx, sy = w / NIH_BOX_SPACE[0], h / NIH_BOX_SPACE[1]
        boxes = [{**b, "box": (b["box"][0] * sx, b["box"][1] * sy, b["box"][2] * sx, b["box"][3] * sy)}
                 for b in rec.meta["boxes"]]
        out.append(replace(rec, meta={**rec.meta, "boxes": boxes}))
    return out


def localization_tables(cfg: RunConfig | str | Path | dict, refs: Sequence[str | Path], kind: str, root: str | Path,
                        task: str = "findings", method: str = "gradcam", ks: Sequence[float] = (5, 10, 20, 50),
                        overrides: Sequence[str] = (), ties: str = "include") -> dict[str, list[dict[str, Any]]]:
    """Heatmaps of ``task`` scored against the boxes of a NIH ChestX-ray14 or VinDr-CXR dataset.

    Every record with boxes is explained once per boxed label the model has (box labels are matched to the model's
    labels exactly or through :func:`medzoo.data.labels.canonical_label`). With several ``refs`` the heatmap is the
    mean of the members' min-max normalised heatmaps.

    Args:
        cfg: the run config (the input contract of a training checkpoint comes from its data entries).
        refs: checkpoints or export dirs (one, or an ensemble).
        kind: ``nih-cxr14`` or ``vindr-cxr``.
        root: the dataset folder (NIH: with ``BBox_List_2017.csv``; its 1024-px boxes are rescaled to each PNG's
            size; VinDr boxes are in the image's own pixels).
        task: the multilabel task to explain.
        method: ``cam`` or ``gradcam``.
        ks: top-k percentages for IoU and Dice.
        ties: the top-k tie rule (see :func:`score_heatmaps`).

    Returns:
        ``{"localization": one row per (image, label), "localization_summary": per label and "all", with IoBB hit
        rates at the ChestX-ray14 thresholds}``.

    Raises:
        ValueError: an unknown dataset kind or task, no boxed image, or no box label the model knows.
    """
    if kind not in ("nih-cxr14", "vindr-cxr"):
        raise ValueError(f"--localization: expected nih-cxr14 or vindr-cxr, got {kind!r}")
    run = cfg if isinstance(cfg, RunConfig) and not overrides else load_run_config(cfg, overrides)
    resolved = [resolve(r) for r in refs]
    models = [r.model for r in resolved]
    for ref, m in zip(refs, models):
        if task not in m.tasks:
            raise ValueError(f"{ref}: the model has no task {task!r} to localise; its tasks are {list(m.tasks)}")
    records = [r for r in open_dataset(kind, root) if boxes_by_label(r)]
    if not records:
        raise ValueError(f"{root}: the {kind} dataset has no image with boxes")
    if kind == "nih-cxr14":
        records = _nih_boxes_in_pixels(records)
    labels = [lab for lab in models[0].heads[task].label_names if all(lab in m.heads[task].label_names
                                                                       for m in models)]
    box_labels = {lab for r in records for lab in boxes_by_label(r)}
    label_map = _label_map(box_labels, labels)
    if not label_map:
        raise ValueError(f"{root}: no box label {sorted(box_labels)} matches a label of task {task!r} ({labels})")
    unmatched = sorted(box_labels - set(label_map))
    if unmatched:
        log.warning("localisation: boxes of %s have no label in task %r and are not scored", unmatched, task)
    fns = [model_heatmap_fn(r.model.eval(), task, method, _contract(run, task, r)) for r in resolved]

    def heatmap(record: Any, label: str) -> np.ndarray:
        maps = [np.asarray(fn(record, label), dtype=np.float64) for fn in fns]
        if len(maps) == 1:
            return maps[0]
        return np.mean([(h - h.min()) / (h.max() - h.min()) if h.max() > h.min() else h * 0 for h in maps], axis=0)

    rows = score_heatmaps(heatmap, records, labels, label_map=label_map, ks=ks, ties=ties)
    log.info("localisation: %d (image, label) pairs from %d boxed images", len(rows), len(records))
    return {"localization": rows, "localization_summary": localization_summary(rows)}
