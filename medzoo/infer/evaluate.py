"""Evaluation tables for ``medzoo evaluate --bootstrap`` and ``--localization``.

- :func:`auroc_ci_table`: per-label AUROC with percentile bootstrap 95% CIs and the mean row, in the layout of the
  CheXNet table (:func:`chexnet_markdown`: ``| Pathology | AUROC (95% CI) |``).
- :func:`covidx_ct_tables`: COVIDx-CT at slice level and at patient level (slice probabilities averaged per
  patient, or the series model's own patient output): accuracy, per-class sensitivity and PPV, one-vs-rest AUROC
  with CIs.
- :func:`evaluate_localization`: heatmaps against the boxes of NIH ``BBox_List_2017.csv`` (``(x, y, w, h)``) and
  VinDr-CXR (``(x_min, y_min, x_max, y_max)`` per radiologist, merged), scored with
  :mod:`medzoo.metrics.localization`: soft Dice, IoU and Dice at top-k percent, IoBB hit rates, pointing game.
- :func:`write_table` / :func:`write_tables`: markdown, CSV or JSON by suffix.

Example:
    >>> import numpy as np
    >>> rows = auroc_ci_table(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]), ["finding"], n_boot=20)
    >>> rows[0]["label"], rows[0]["auroc"], rows[-1]["label"]
    ('finding', 0.75, 'Mean')
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.metrics.localization import IOBB_THRESHOLDS, box_to_mask, hit_rates, localization_scores

__all__ = [
    "auroc_ci_table", "boxes_by_label", "chexnet_markdown", "covidx_ct_tables", "evaluate_localization",
    "format_markdown", "model_heatmap_fn", "localization_summary", "write_table", "write_tables",
]


# ---------------------------------------------------------------------------------------------------- AUROC
def auroc_ci_table(scores: Any, targets: Any, labels: Sequence[str], n_boot: int = 1000, level: float = 0.95,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Per-label AUROC with bootstrap CIs, then a ``Mean`` row (mean over labels where AUROC is defined).

    Args:
        scores: ``[N]`` or ``[N, L]`` probabilities.
        targets: same shape, 0/1, NaN = unknown.
        labels: L names.
        n_boot, level, seed: see :func:`medzoo.metrics.auroc_bootstrap_ci`.

    Returns:
        Rows ``{"label", "auroc", "ci_lower", "ci_upper", "n_pos", "n_neg"}``.
    """
    from medzoo.metrics import auroc_bootstrap_ci

    s = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    t = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    if s.shape != t.shape or s.shape[1] != len(labels):
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be [N, {len(labels)}] for labels "
                         f"{list(labels)}")
    ci = auroc_bootstrap_ci(s, t, n_boot=n_boot, level=level, seed=seed)
    rows = [{"label": str(lab), "auroc": float(ci.auroc[j]), "ci_lower": float(ci.lower[j]),
             "ci_upper": float(ci.upper[j]), "n_pos": int((t[:, j] == 1).sum()), "n_neg": int((t[:, j] == 0).sum())}
            for j, lab in enumerate(labels)]
    rows.append({"label": "Mean", "auroc": ci.mean, "ci_lower": ci.mean_lower, "ci_upper": ci.mean_upper,
                 "n_pos": int((t == 1).sum()), "n_neg": int((t == 0).sum())})
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def chexnet_markdown(rows: Sequence[Mapping[str, Any]], digits: int = 3, title: str = "Pathology") -> str:
    """``| Pathology | AUROC (95% CI) |`` with cells like ``0.812 (0.790-0.833)``."""
    lines = [f"| {title} | AUROC (95% CI) |", "|---|---|"]
    for r in rows:
        cell = f"{_fmt(r['auroc'], digits)} ({_fmt(r['ci_lower'], digits)}-{_fmt(r['ci_upper'], digits)})"
        lines.append(f"| {r['label']} | {cell} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- COVIDx-CT
def _class_rows(probs: np.ndarray, targets: np.ndarray, classes: Sequence[str], n_boot: int,
                seed: int) -> list[dict[str, Any]]:
    from medzoo.metrics import classification_metrics, one_hot_targets

    valid = ~np.isnan(targets)
    m = classification_metrics(targets[valid], probs[valid], len(classes), classes)
    auc = auroc_ci_table(probs, one_hot_targets(targets, len(classes)), classes, n_boot=n_boot, seed=seed)
    rows = []
    for c, a in zip(classes, auc):
        rows.append({"class": c, "sensitivity": m[f"sensitivity/{c}"], "ppv": m[f"precision/{c}"],
                     "auroc": a["auroc"], "ci_lower": a["ci_lower"], "ci_upper": a["ci_upper"]})
    rows.append({"class": "all", "accuracy": m["accuracy"], "sensitivity": m["macro_sensitivity"],
                 "ppv": m["macro_precision"], "auroc": auc[-1]["auroc"], "ci_lower": auc[-1]["ci_lower"],
                 "ci_upper": auc[-1]["ci_upper"], "n": int(valid.sum())})
    return rows


def covidx_ct_tables(patient_ids: Sequence[Any], slice_probs: Any, slice_targets: Any, classes: Sequence[str], *,
                     patient_probs: Mapping[str, Any] | None = None, method: str = "mean", n_boot: int = 1000,
                     seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Slice-level and patient-level tables for COVIDx-CT.

    Args:
        patient_ids: ``[N]`` patient of each slice.
        slice_probs: ``[N, K]`` slice probabilities.
        slice_targets: ``[N]`` class indices.
        classes: K class names.
        patient_probs: a series model's own patient output ``{patient: [K]}`` (DECISIONS 19); default: slice
            probabilities aggregated with ``method`` (:func:`medzoo.metrics.aggregate_by_patient`).
        method: ``mean`` or ``majority``.
        n_boot, seed: bootstrap settings for the AUROC CIs.

    Returns:
        ``{"slice": rows, "patient": rows}``, each one row per class plus an ``all`` row with accuracy.
    """
    from medzoo.metrics import aggregate_by_patient

    p = np.asarray(slice_probs, dtype=np.float64)
    t = np.asarray(slice_targets, dtype=np.float64)
    agg = aggregate_by_patient(patient_ids, p, t, method=method)
    pp = agg.probs if patient_probs is None else np.stack([np.asarray(patient_probs[i], dtype=np.float64)
                                                             for i in agg.patient_ids])
    return {"slice": _class_rows(p, t, classes, n_boot, seed),
            "patient": _class_rows(pp, np.asarray(agg.targets, dtype=np.float64), classes, n_boot, seed)}


# ---------------------------------------------------------------------------------------------- localisation
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


def evaluate_localization(heatmap_fn: Callable[[Any, str], np.ndarray], records: Sequence[Any], labels: Sequence[str],
                          *, label_map: Mapping[str, str] | None = None, ks: Sequence[float] = (5, 10, 20, 50),
                          ties: str = "first") -> list[dict[str, Any]]:
    """Score heatmaps against the boxes of every record that has them.

    Args:
        heatmap_fn: ``(record, model_label) -> [H, W]`` heatmap at the image's own size (box coordinates).
        records: manifest records (NIH with ``boxes=True``, or VinDr).
        labels: the model's label names; boxes of other labels are left out.
        label_map: dataset label -> model label (e.g. ``{"Nodule/Mass": "Nodule"}``).
        ks: top-k percentages.
        ties: tie rule of :func:`medzoo.metrics.localization.binarize_top_k`.

    Returns:
        One row per (record, label): ``id``, ``label``, ``n_boxes`` and every score of
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
            scores = localization_scores(heat, target, ks=ks, ties=ties, normalize=True)
            rows.append({"id": rec.id, "label": label, "n_boxes": len(boxes), **scores})
    return rows


def model_heatmap_fn(model: Any, task: str, method: str = "gradcam",
                     preprocessing: Any = None) -> Callable[[Any, str], np.ndarray]:
    """A ``heatmap_fn`` for :func:`evaluate_localization`: read the record's image, apply the contract, explain
    ``task``/label with CAM or Grad-CAM, and map the heatmap back to the image's own size."""
    from medzoo.data.imageio import read_image
    from medzoo.infer.cam import explain
    from medzoo.infer.preprocess import prepare_image

    in_channels = int(getattr(model.encoder, "in_channels", 1) or 1)

    def heatmap(record: Any, label: str) -> np.ndarray:
        arr, meta = read_image(record.image)
        prep = prepare_image(arr, meta, preprocessing, in_channels, str(record.id))
        maps = explain(model, prep.tensor, task, label, method).maps
        return prep.to_original(maps)[0]

    return heatmap


def localization_summary(rows: Sequence[Mapping[str, Any]], iobb_k: float = 10,
                         thresholds: Sequence[float] = IOBB_THRESHOLDS) -> list[dict[str, Any]]:
    """Per label (and ``all``): the mean of every score, and the IoBB hit rates ``acc@T`` at ``iobb@{iobb_k}``.

    Returns:
        Rows ``{"label", "n", <score>: mean, "acc@T": fraction with IoBB > T}``.
    """
    if not rows:
        return []
    keys = [k for k in rows[0] if k not in ("id", "label", "n_boxes")]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["label"], []).append(r)
    groups["all"] = list(rows)
    out = []
    for label, rs in groups.items():
        row: dict[str, Any] = {"label": label, "n": len(rs)}
        row.update({k: float(np.mean([r[k] for r in rs])) for k in keys})
        key = f"iobb@{iobb_k:g}"
        if key in rs[0]:
            row.update({f"acc@{t:g}": v for t, v in hit_rates([r[key] for r in rs], thresholds).items()})
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------- writers
def format_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """A markdown table (floats with ``digits`` decimals; NaN as ``n/a``; missing cells empty)."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, ""), digits) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _json_safe(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def write_table(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as ``.md``, ``.csv`` or ``.json`` (NaN becomes ``null`` in JSON, empty in CSV)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    cols = list(dict.fromkeys(k for r in rows for k in r))
    if suffix == ".md":
        p.write_text(format_markdown(rows, cols), encoding="utf-8")
    elif suffix == ".csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows([{k: ("" if _json_safe(v) is None else v) for k, v in r.items()} for r in rows])
        p.write_text(buf.getvalue(), encoding="utf-8")
    elif suffix == ".json":
        p.write_text(json.dumps([{k: _json_safe(v) for k, v in r.items()} for r in rows], indent=2), encoding="utf-8")
    else:
        raise ValueError(f"{p}: unknown table format {suffix!r}; expected .md, .csv or .json")
    return p


def write_tables(tables: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | Path,
                 formats: Sequence[str] = ("md", "csv", "json")) -> list[Path]:
    """Write each named table in each format: ``out_dir/{name}.{fmt}``."""
    return [write_table(rows, Path(out_dir) / f"{name}.{fmt}") for name, rows in tables.items() for fmt in formats]
