"""PadChest: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` with stringified label lists.

The ``Labels`` cell is a Python list literal of lower-case terms (``"['pleural effusion', 'cardiomegaly']"``),
parsed with :func:`ast.literal_eval` (never ``eval``). Terms are stripped of surrounding spaces and empty terms
are dropped. A blank or ``nan`` cell means the report was not labelled: the record keeps an all-NaN vector
(``meta["labelled"] = False``) rather than being dropped silently.

``label_names["findings"]`` is the sorted set of terms found in the file (the dataset's own spelling), or the
``labels`` option; with that option, a term outside the list is an unknown-label error. A listed term is 1, an
absent one 0. Images are looked up as ``root/<ImageDir>/<ImageID>``, ``root/images/<ImageID>`` then
``root/<ImageID>``. ``exclude`` names ImageIDs to leave out (for example the known broken files).

Example:
    >>> m = open_dataset("padchest", "/data/PadChest", exclude=["broken_image.png"])  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import (
    CsvTable,
    drop_duplicate_ids,
    first_existing,
    make_manifest,
    read_csv,
    resolve_path,
    row_dict,
)
from medzoo.data.readers._registry import DATASETS

__all__ = ["parse_label_list", "read_padchest"]

log = logging.getLogger(__name__)

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
REQUIRED = ("ImageID", "PatientID", "Labels")


def parse_label_list(text: str, path: Path | str, line: int) -> list[str] | None:
    """Parse a stringified list of terms; None for a blank or NaN cell."""
    text = text.strip()
    if not text or text.lower() == "nan":
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DatasetFormatError(path, f"column 'Labels': expected a list literal like ['normal'], got {text!r}",
                                 line) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetFormatError(path, f"column 'Labels': expected a list of strings, got {text!r}", line)
    terms: list[str] = []
    for v in value:
        v = v.strip()
        if v and v not in terms:
            terms.append(v)
    return terms


def _csv_path(root: Path, csv: str | None) -> Path:
    if csv:
        return root / csv
    if (root / CSV_NAME).exists():
        return root / CSV_NAME
    found = sorted(p for p in root.glob("PADCHEST*.csv*"))
    return found[0] if found else root / CSV_NAME


def _parse_rows(table: CsvTable, root: Path, errors: ErrorCollector, exclude: set[str]) -> list[tuple]:
    rows = []
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
            name = row["ImageID"].strip()
            if name in exclude:
                continue
            terms = parse_label_list(row["Labels"], table.path, line)
            subdirs = ([row["ImageDir"].strip()] if row.get("ImageDir", "").strip() else []) + ["images", ""]
            candidates = [resolve_path(root, os.path.join(d, name), table.path, line) for d in subdirs]
            image = first_existing(candidates, table.path, line)
            if not row["PatientID"].strip():
                raise DatasetFormatError(table.path, "empty 'PatientID'", line)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        rows.append((line, row, image, terms))
    return rows


def _vocabulary(rows: Iterable[tuple], labels: list[str] | None) -> list[str]:
    if labels is not None:
        return list(labels)
    return sorted({t for *_, terms in rows for t in (terms or [])})


@DATASETS.register("padchest")
def read_padchest(root: Path, *, split: str | None, errors: ErrorCollector, csv: str | None = None,
                  labels: list[str] | None = None, exclude: Iterable[str] = ()) -> Manifest:
    """Read PadChest under ``root``.

    Args:
        root: dataset folder (holding the CSV and the image folders).
        split: PadChest has no official split; must be None.
        errors: the error policy.
        csv: the CSV file name, if not the standard one.
        labels: the finding vocabulary; default all terms found in the file.
        exclude: ImageIDs to leave out.
    """
    if split is not None:
        raise ValueError("padchest has no official split; use medzoo.data.patient_split")
    table = read_csv(_csv_path(root, csv), errors)
    for col in REQUIRED:
        table.column(col)
    rows = _parse_rows(table, root, errors, set(exclude))
    vocab = _vocabulary(rows, labels)
    position = {t: i for i, t in enumerate(vocab)}
    records, unlabelled = [], 0
    for line, row, image, terms in rows:
        vec = np.zeros(len(vocab), dtype=np.float32)
        try:
            for t in terms or []:
                if t not in position:
                    raise DatasetFormatError(table.path, f"unknown label {t!r}; expected one of the `labels` option",
                                             line)
                vec[position[t]] = 1.0
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        if terms is None:
            vec[:], unlabelled = math.nan, unlabelled + 1
        meta = {"source": (str(table.path), line), "projection": row.get("Projection", "").strip(),
                "view": row.get("Projection", "").strip(), "sex": row.get("PatientSex_DICOM", "").strip(),
                "study_date": row.get("StudyDate_DICOM", "").strip(), "labelled": terms is not None}
        records.append(Record(id=row["ImageID"].strip(), patient_id=row["PatientID"].strip(), image=image,
                              labels={"findings": vec}, meta=meta))
    if unlabelled:
        log.warning("padchest: %d image(s) have no Labels; their findings are NaN", unlabelled)
    records = drop_duplicate_ids(records, errors)
    return make_manifest("padchest", root, records, {"findings": vocab}, None, errors, {"findings"})
