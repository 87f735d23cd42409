"""Evaluation tables: AUROC with bootstrap CIs (the CheXNet layout), COVIDx-CT at slice, series and patient level,
and the tables ``medzoo evaluate --bootstrap`` writes.

- :func:`auroc_ci_table`: per-label AUROC with percentile bootstrap 95% CIs and the mean row, the rows of the
  CheXNet table (:func:`medzoo.evaluation.chexnet.format_chexnet_table` lays them out);
- :func:`covidx_ct_tables`: COVIDx-CT at slice level and at patient level (slice probabilities averaged per
  patient, or the series model's own patient output): accuracy, per-class sensitivity and PPV, one-vs-rest AUROC
  with CIs;
- :func:`bootstrap_tables`: both, for every task of a model's (or an ensemble's) predictions;
- :func:`write_table` / :func:`write_tables`: markdown, CSV or JSON by suffix.

**Bootstrap unit.** CIs resample patients by default (a cluster bootstrap: each drawn patient brings all of its
images, slices or series), because images of one patient are correlated and resampling them as if independent
makes intervals too narrow. ``unit="image"`` resamples rows instead. A patient is ``(dataset kind, patient_id)``:
ids of two datasets never merge. Every row names what was resampled (``bootstrap_unit``) and how many
(``n_units``).

Example:
    >>> import numpy as np
    >>> rows = auroc_ci_table(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]), ["finding"], n_boot=20,
    ...                       groups=["p1", "p1", "p2", "p3"])
    >>> rows[0]["label"], rows[0]["auroc"], rows[0]["bootstrap_unit"], rows[0]["n_units"], rows[-1]["label"]
    ('finding', 0.75, 'patient', 3, 'Mean')
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.metrics import aggregate_by_patient, auroc_bootstrap_ci, classification_metrics, one_hot_targets
from medzoo.train.evaluate import TaskPredictions
from medzoo.utils.tables import render_records

__all__ = ["BOOTSTRAP_UNITS", "auroc_ci_table", "bootstrap_tables", "covidx_ct_tables", "patient_keys", "write_table",
           "write_tables"]

log = logging.getLogger(__name__)

BOOTSTRAP_UNITS: tuple[str, ...] = ("patient", "image")
"""What a bootstrap replicate resamples: whole patients (the default) or single rows."""


def _check_unit(unit: str) -> None:
    if unit not in BOOTSTRAP_UNITS:
        raise ValueError(f"bootstrap unit must be one of {BOOTSTRAP_UNITS}, got {unit!r}")


def patient_keys(patients: Sequence[Any], datasets: Sequence[Any] | None = None) -> list[tuple[str, str]]:
    """The patient of each sample as ``(dataset kind, patient id)``, so ids of different datasets never merge.

    Example:
        >>> patient_keys(["7", "7"], ["nih-cxr14", "chexpert"])
        [('nih-cxr14', '7'), ('chexpert', '7')]
    """
    kinds = [""] * len(patients) if datasets is None else list(datasets)
    if len(kinds) != len(patients):
        raise ValueError(f"{len(patients)} patient ids but {len(kinds)} dataset kinds")
    return [(str(d), str(p)) for d, p in zip(kinds, patients)]


# ---------------------------------------------------------------------------------------------------- AUROC
def auroc_ci_table(scores: Any, targets: Any, labels: Sequence[str], n_boot: int = 1000, level: float = 0.95,
                   seed: int = 0, groups: Sequence[Hashable] | None = None,
                   unit: str | None = None) -> list[dict[str, Any]]:
    """Per-label AUROC with bootstrap CIs, then a ``Mean`` row (mean over labels where AUROC is defined).

    Args:
        scores: ``[N]`` or ``[N, L]`` probabilities.
        targets: same shape, 0/1, NaN = unknown.
        labels: L names.
        n_boot, level, seed: see :func:`medzoo.metrics.auroc_bootstrap_ci`.
        groups: ``[N]`` patient of each row (see :func:`patient_keys`): patients are resampled (cluster
            bootstrap); None resamples rows.
        unit: the name of what is resampled, for the ``bootstrap_unit`` column (default ``"patient"`` with
            ``groups``, else ``"image"``).

    Returns:
        Rows ``{"label", "auroc", "ci_lower", "ci_upper", "n_pos", "n_neg", "bootstrap_unit", "n_units"}``.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    t = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    if s.shape != t.shape or s.shape[1] != len(labels):
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be [N, {len(labels)}] for labels "
                         f"{list(labels)}")
    ci = auroc_bootstrap_ci(s, t, n_boot=n_boot, level=level, seed=seed, groups=groups)
    tag = {"bootstrap_unit": unit or ("patient" if groups is not None else "image"), "n_units": ci.n_units}
    rows = [{"label": str(lab), "auroc": float(ci.auroc[j]), "ci_lower": float(ci.lower[j]),
             "ci_upper": float(ci.upper[j]), "n_pos": int((t[:, j] == 1).sum()), "n_neg": int((t[:, j] == 0).sum()),
             **tag} for j, lab in enumerate(labels)]
    rows.append({"label": "Mean", "auroc": ci.mean, "ci_lower": ci.mean_lower, "ci_upper": ci.mean_upper,
                 "n_pos": int((t == 1).sum()), "n_neg": int((t == 0).sum()), **tag})
    return rows


# ------------------------------------------------------------------------------------------------- COVIDx-CT
def _class_rows(probs: np.ndarray, targets: np.ndarray, classes: Sequence[str], n_boot: int, seed: int,
                groups: Sequence[Hashable] | None = None, unit: str | None = None) -> list[dict[str, Any]]:
    valid = ~np.isnan(targets)
    m = classification_metrics(targets[valid], probs[valid], len(classes), classes)
    auc = auroc_ci_table(probs, one_hot_targets(targets, len(classes)), classes, n_boot=n_boot, seed=seed,
                         groups=groups, unit=unit)
    tag = {"bootstrap_unit": auc[-1]["bootstrap_unit"], "n_units": auc[-1]["n_units"]}
    rows = []
    for c, a in zip(classes, auc):
        rows.append({"class": c, "sensitivity": m[f"sensitivity/{c}"], "ppv": m[f"precision/{c}"],
                     "auroc": a["auroc"], "ci_lower": a["ci_lower"], "ci_upper": a["ci_upper"], **tag})
    rows.append({"class": "all", "accuracy": m["accuracy"], "sensitivity": m["macro_sensitivity"],
                 "ppv": m["macro_precision"], "auroc": auc[-1]["auroc"], "ci_lower": auc[-1]["ci_lower"],
                 "ci_upper": auc[-1]["ci_upper"], "n": int(valid.sum()), **tag})
    return rows


def covidx_ct_tables(patient_ids: Sequence[Any], slice_probs: Any, slice_targets: Any, classes: Sequence[str], *,
                     patient_probs: Mapping[str, Any] | None = None, method: str = "mean", n_boot: int = 1000,
                     seed: int = 0, unit: str = "patient") -> dict[str, list[dict[str, Any]]]:
    """Slice-level and patient-level tables for COVIDx-CT.

    Args:
        patient_ids: ``[N]`` patient of each slice.
        slice_probs: ``[N, K]`` slice probabilities.
        slice_targets: ``[N]`` class indices.
        classes: K class names.
        patient_probs: a series model's own patient output ``{patient: [K]}`` (its aggregator decides, so the
            patient level is what the model says about the whole series); default: slice probabilities aggregated
            with ``method`` (:func:`medzoo.metrics.aggregate_by_patient`).
        method: ``mean`` or ``majority``.
        n_boot, seed: bootstrap settings for the AUROC CIs.
        unit: ``"patient"`` resamples the slice table's patients (all slices of a drawn patient), ``"image"`` its
            slices. The patient table has one row per patient, so it resamples patients either way.

    Returns:
        ``{"slice": rows, "patient": rows}``, each one row per class plus an ``all`` row with accuracy.
    """
    _check_unit(unit)
    p = np.asarray(slice_probs, dtype=np.float64)
    t = np.asarray(slice_targets, dtype=np.float64)
    agg = aggregate_by_patient(patient_ids, p, t, method=method)
    pp = agg.probs if patient_probs is None else np.stack([np.asarray(patient_probs[i], dtype=np.float64)
                                                             for i in agg.patient_ids])
    groups = list(patient_ids) if unit == "patient" else None
    return {"slice": _class_rows(p, t, classes, n_boot, seed, groups),
            "patient": _class_rows(pp, np.asarray(agg.targets, dtype=np.float64), classes, n_boot, seed,
                                   unit="patient")}


def _series_tables(p: TaskPredictions, keys: list[tuple[str, str]], unit: str, n_boot: int,
                   seed: int) -> dict[str, list[dict[str, Any]]]:
    """A series model's ``slice`` (its head on each slice), ``series`` (its answer per scan) and ``patient``
    tables. A patient's series are merged by the mean of their probabilities (argmax for the class): COVIDNet-CT
    reports slice-level figures only and states no patient rule, and the mean is the rule slices already follow."""
    labels, by_patient = list(p.labels), unit == "patient"
    out = {}
    if p.slice_scores is not None:
        patient_of = dict(zip(p.ids, keys))
        groups = [patient_of[s] for s in p.slice_series] if by_patient else None
        out["slice"] = _class_rows(p.slice_scores, p.slice_targets, labels, n_boot, seed, groups)
    out["series"] = _class_rows(p.scores, p.targets, labels, n_boot, seed, keys if by_patient else None,
                                "patient" if by_patient else "series")
    try:
        agg = aggregate_by_patient(keys, p.scores, p.targets, method="mean")
    except ValueError as err:
        raise ValueError(f"task {p.task!r}: the series of one patient must share the patient's class: {err}") from err
    out["patient"] = _class_rows(agg.probs, agg.targets, labels, n_boot, seed, unit="patient")
    return out


# ---------------------------------------------------------------------------------------------------- bootstrap
def bootstrap_tables(preds: Mapping[str, TaskPredictions], n_boot: int = 1000, seed: int = 0,
                     unit: str = "patient") -> dict[str, list[dict[str, Any]]]:
    """AUROC tables with percentile-bootstrap 95% CIs.

    - multilabel task -> ``<task>_auroc_ci``: one row per label plus ``Mean`` (:func:`auroc_ci_table`, the CheXNet
      layout);
    - COVIDx-CT classification, slice model -> ``<task>_slice`` and ``<task>_patient`` (:func:`covidx_ct_tables`,
      slice probabilities averaged per patient);
    - COVIDx-CT classification, series model -> ``<task>_slice`` (its head on each slice's pooled features),
      ``<task>_series`` (its aggregator output, one row per scan) and ``<task>_patient`` (one row per patient: the
      mean probability over the patient's series, so two scans of one patient count once);
    - other classification -> ``<task>_auroc_ci``, one-vs-rest per class.

    Regression tasks have no AUROC and are left out (logged).

    Args:
        preds: ``{task: TaskPredictions}`` (:func:`medzoo.evaluation.checkpoint.evaluate_checkpoint`).
        n_boot, seed: bootstrap draws and seed.
        unit: ``"patient"`` (default: cluster bootstrap over :func:`patient_keys`) or ``"image"`` (rows).

    Returns:
        ``{table name: rows}``; every row carries ``bootstrap_unit`` and ``n_units``.
    """
    _check_unit(unit)
    tables: dict[str, list[dict[str, Any]]] = {}
    for task, p in preds.items():
        labels = list(p.labels)
        keys = patient_keys(p.patients, p.datasets)
        groups = keys if unit == "patient" else None
        if p.kind == "regression":
            log.info("bootstrap: task %r is a regression; no AUROC table", task)
        elif p.kind == "vector":
            tables[f"{task}_auroc_ci"] = auroc_ci_table(p.scores, p.targets, labels, n_boot=n_boot, seed=seed,
                                                        groups=groups)
        elif "covidx-ct" not in p.datasets:
            tables[f"{task}_auroc_ci"] = auroc_ci_table(p.scores, one_hot_targets(p.targets, len(labels)), labels,
                                                        n_boot=n_boot, seed=seed, groups=groups)
        elif p.level != "series":  # a slice model: slice probabilities averaged per patient
            tables.update({f"{task}_{lvl}": rows for lvl, rows in covidx_ct_tables(
                keys, p.scores, p.targets, labels, n_boot=n_boot, seed=seed, unit=unit).items()})
        else:
            tables.update({f"{task}_{lvl}": rows for lvl, rows in _series_tables(p, keys, unit, n_boot, seed).items()})
    return tables


# ---------------------------------------------------------------------------------------------------- writers
def _json_safe(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def write_table(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as ``.md``, ``.csv`` or ``.json`` (NaN becomes ``null`` in JSON, empty in CSV)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    cols = list(dict.fromkeys(k for r in rows for k in r))
    if suffix == ".md":
        p.write_text(render_records(rows, cols, style="markdown", digits=3) + "\n", encoding="utf-8")
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
