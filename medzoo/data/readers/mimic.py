"""MIMIC-CXR-JPG 2.0.0: per-study labels joined onto per-image metadata.

Files under ``root`` (plain or ``.gz``): ``mimic-cxr-2.0.0-chexpert.csv`` (or ``-negbio.csv``; one row per
study, CheXpert coding), ``mimic-cxr-2.0.0-metadata.csv`` (one row per image) and, optionally,
``mimic-cxr-2.0.0-split.csv`` (``train`` / ``validate`` / ``test``). Images are
``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg``.

Each image gets its study's label vector, harmonised like CheXpert's (see
:func:`~medzoo.data.readers.chexpert.harmonise_chexpert`: a ``No Finding = 1`` study has its 12 pathologies set to
0, ``Support Devices`` stays independent, a blank No Finding becomes 0 next to a positive or uncertain pathology,
then the ``blank`` and ``uncertainty`` policies). TorchXRayVision's ``MIMIC_Dataset`` also zeroes Support Devices
in No Finding studies and keeps the other blanks NaN. An image whose study has no label row keeps an all-NaN
vector (``meta["labelled"] = False``) and the count is logged.

``views`` keeps PA and AP images by default (``ViewPosition``; a blank one is ``UNKNOWN``); ``views="*"`` keeps
all, and the number left out per view is logged. ``meta``: ``view``, ``study``, ``official_split``, ``labelled``
and ``source`` (the metadata file and line).

Example:
    >>> m = open_dataset("mimic-cxr-jpg", "/data/mimic-cxr-jpg/2.0.0", split="test")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import (
    drop_duplicate_ids,
    keep_views,
    make_manifest,
    read_csv,
    resolve_path,
    row_dict,
    select_split,
    view_filter,
)
from medzoo.data.readers._registry import DATASETS
from medzoo.data.readers.chexpert import (
    FRONTAL_VIEWS,
    check_policies,
    chexpert_value,
    harmonise_chexpert,
    label_columns,
)

__all__ = ["read_mimic"]

log = logging.getLogger(__name__)

PREFIX = "mimic-cxr-2.0.0-"
SPLITS = {"train": "train", "validate": "validate", "val": "validate", "valid": "validate", "test": "test"}


def _find(root: Path, name: str, required: bool = True) -> Path | None:
    for candidate in (root / f"{PREFIX}{name}.csv", root / f"{PREFIX}{name}.csv.gz"):
        if candidate.exists():
            return candidate
    if required:
        raise DatasetFormatError(root / f"{PREFIX}{name}.csv", "file not found (also looked for .csv.gz)")
    return None


def _ids(row: dict[str, str], path: Path, line: int, *cols: str) -> tuple[str, ...]:
    out = []
    for col in cols:
        value = row[col].strip()
        if not value.isdigit() and col != "dicom_id":
            raise DatasetFormatError(path, f"column {col!r}: expected an integer id, got {value!r}", line)
        if not value:
            raise DatasetFormatError(path, f"column {col!r} is empty", line)
        out.append(value)
    return tuple(out)


def _labels(path: Path, errors: ErrorCollector, uncertain: float, blank: float
            ) -> tuple[list[str], dict[tuple[str, str], np.ndarray]]:
    table = read_csv(path, errors)
    table.column("subject_id"), table.column("study_id")
    cols = label_columns(table, ("subject_id", "study_id"))
    out: dict[tuple[str, str], np.ndarray] = {}
    conflicts = 0
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
            key = _ids(row, path, line, "subject_id", "study_id")
            if key in out:
                raise DatasetFormatError(path, f"second label row for subject/study {key}", line)
            raw = np.array([chexpert_value(row[c], path, line, c) for c in cols], dtype=np.float32)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        out[key], conflict = harmonise_chexpert(raw, cols, uncertain=uncertain, blank=blank)
        conflicts += conflict
    if conflicts:
        log.warning("mimic-cxr-jpg: %d stud(ies) have No Finding = 1 next to a positive or uncertain pathology; the "
                    "pathologies were set to 0 (the No Finding rule)", conflicts)
    return cols, out


def _splits(path: Path | None, errors: ErrorCollector) -> dict[str, str]:
    if path is None:
        return {}
    table = read_csv(path, errors)
    table.column("dicom_id"), table.column("split")
    out = {}
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
            if row["split"].strip() not in ("train", "validate", "test"):
                raise DatasetFormatError(path, f"unknown split {row['split']!r}; expected train, validate or test",
                                         line)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        out[row["dicom_id"].strip()] = row["split"].strip()
    return out


def _images(root: Path, meta_path: Path, errors: ErrorCollector, cols: list[str],
            labels: dict[tuple[str, str], np.ndarray], official: dict[str, str], need_view: bool) -> list[Record]:
    """One record per metadata row, carrying its study's label vector (all NaN when the study has none)."""
    table = read_csv(meta_path, errors)
    for col in ("dicom_id", "subject_id", "study_id", *(("ViewPosition",) if need_view else ())):
        table.column(col)  # without ViewPosition the view filter would drop every image
    records, unlabelled = [], 0
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
            dicom, subject, study = _ids(row, meta_path, line, "dicom_id", "subject_id", "study_id")
            rel = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"
            image = resolve_path(root, rel, meta_path, line)
            if not Path(image).is_file():
                raise DatasetFormatError(meta_path, f"image not found: {image}", line)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        vec = labels.get((subject, study))
        unlabelled += vec is None
        meta = {"source": (str(meta_path), line), "view": row.get("ViewPosition", "").strip() or "UNKNOWN",
                "study": study, "labelled": vec is not None}
        if dicom in official:
            meta["official_split"] = official[dicom]
        vec = vec.copy() if vec is not None else np.full(len(cols), np.nan, dtype=np.float32)
        records.append(Record(id=dicom, patient_id=subject, image=image, labels={"findings": vec}, meta=meta))
    if unlabelled:
        log.warning("mimic-cxr-jpg: %d image(s) have no label row for their study; their labels are NaN", unlabelled)
    return records


@DATASETS.register("mimic-cxr-jpg")
def read_mimic(root: Path, *, split: str | None, errors: ErrorCollector, labeler: str = "chexpert",
               uncertainty: str = "u-ignore", blank: str = "zero",
               views: str | Sequence[str] = FRONTAL_VIEWS) -> Manifest:
    """Read MIMIC-CXR-JPG under ``root`` (the folder holding the CSV files and ``files/``).

    Args:
        root: dataset folder.
        split: ``"train"``, ``"validate"`` (alias ``"val"``), ``"test"`` or None.
        errors: the error policy.
        labeler: ``"chexpert"`` or ``"negbio"`` label file.
        uncertainty: ``"u-ignore"`` (NaN), ``"u-zeros"`` or ``"u-ones"``.
        blank: ``"zero"`` (not mentioned -> 0) or ``"nan"``.
        views: ``ViewPosition`` codes to keep (default PA and AP), or ``"*"`` for all.
    """
    if labeler not in ("chexpert", "negbio"):
        raise ValueError(f"mimic-cxr-jpg: labeler must be 'chexpert' or 'negbio', got {labeler!r}")
    uncertain, blank_value = check_policies("mimic-cxr-jpg", uncertainty, blank)
    keep = view_filter("mimic-cxr-jpg", views)
    cols, labels = _labels(_find(root, labeler), errors, uncertain, blank_value)
    official = _splits(_find(root, "split", required=False), errors)
    records = _images(root, _find(root, "metadata"), errors, cols, labels, official, keep is not None)
    if split is not None and not official:
        raise DatasetFormatError(root / f"{PREFIX}split.csv", f"split {split!r} asked for, but there is no split file")
    records, name = select_split("mimic-cxr-jpg", drop_duplicate_ids(records, errors), split, SPLITS)
    records = keep_views("mimic-cxr-jpg", records, keep)
    return make_manifest("mimic-cxr-jpg", root, records, {"findings": cols}, name, errors, {"findings"})
