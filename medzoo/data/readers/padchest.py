"""PadChest: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` with stringified label lists.

The ``Labels`` cell is a Python list literal of terms (``"['pleural effusion', 'cardiomegaly']"``), parsed with
:func:`ast.literal_eval` (never ``eval``). Terms are stripped of surrounding spaces, empty terms are dropped, and
each must be one of the 193 PadChest terms of :mod:`medzoo.data.padchest_terms` (matching ignores case); any other
term is an unknown-label error naming the line.

``label_space="padchest"`` (default): ``label_names["findings"]`` is the 193 terms by their own names. A listed
term is 1 and, with ``hierarchy=True`` (default), so are its PadChest parent terms (``laminar atelectasis`` sets
``atelectasis``), since the report names the specific finding and PadChest's taxonomy makes it an instance of the
broader one. Absent terms are 0: the labels cover the whole report. Two cases are not complete readings, and there
the absent terms are NaN: a list with ``exclude``, and a list of only ``unchanged`` / ``suboptimal study`` (the
report compares with an earlier study or rejects the image without naming findings). A blank or ``nan`` cell means
the report was not labelled: all NaN (``meta["labelled"] = False``), where TorchXRayVision drops the row.
``label_space="cxr"`` returns the harmonised vocabulary directly (:func:`medzoo.data.labels.relabel`, which maps
hyponyms to their parents).

``views`` keeps the ``Projection`` codes PA and AP by default (TorchXRayVision keeps PA; its "AP Supine" is
PadChest's ``AP_horizontal``, left out here unless asked for); ``views="*"`` keeps all, and the number left out
per view is logged. Images are looked up as ``root/<ImageDir>/<ImageID>``, ``root/images/<ImageID>`` then
``root/<ImageID>``. ``exclude`` names ImageIDs to leave out (for example the known broken files).
``meta``: ``view``/``projection``, ``terms`` (the listed terms, table spelling), ``labelled``, ``complete``,
``sex``, ``study_date`` and ``source``.

Example:
    >>> m = open_dataset("padchest", "/data/PadChest", exclude=["broken_image.png"])  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from medzoo.data.labels import relabel
from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.padchest_terms import PADCHEST_LABELS, padchest_ancestors, padchest_term
from medzoo.data.readers._common import (
    CsvTable,
    drop_duplicate_ids,
    first_existing,
    keep_views,
    make_manifest,
    read_csv,
    resolve_path,
    row_dict,
    view_filter,
)
from medzoo.data.readers._registry import DATASETS
from medzoo.data.readers.chexpert import FRONTAL_VIEWS

__all__ = ["parse_label_list", "term_vector", "read_padchest"]

log = logging.getLogger(__name__)

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
REQUIRED = ("ImageID", "PatientID", "Labels")
EXCLUDE = "exclude"
#: Terms that alone do not describe the image's findings.
PARTIAL = frozenset({"unchanged", "suboptimal study"})
_POSITION = {t: i for i, t in enumerate(PADCHEST_LABELS)}


def parse_label_list(text: str, path: Path | str, line: int) -> list[str] | None:
    """Parse a stringified list of terms; None for a blank or NaN cell."""
    text = text.strip()
    if not text or text.lower() == "nan":
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError):  # a deeply nested literal exhausts the parser
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
            terms = _terms(parse_label_list(row["Labels"], table.path, line), table.path, line)
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


def _terms(listed: list[str] | None, path: Path, line: int) -> list[str] | None:
    if listed is None:
        return None
    out = []
    for t in listed:
        term = padchest_term(t)
        if term is None:
            raise DatasetFormatError(path, f"unknown label {t!r}; expected one of the 193 PadChest terms "
                                     "(medzoo.data.padchest_terms.PADCHEST_LABELS)", line)
        out += [term] if term not in out else []
    return out


def term_vector(terms: list[str] | None, *, hierarchy: bool = True) -> tuple[np.ndarray, bool]:
    """The ``[193]`` vector over :data:`PADCHEST_LABELS` of a report's terms, and whether the reading is complete.

    Example:
        >>> vec, complete = term_vector(["laminar atelectasis"])
        >>> [PADCHEST_LABELS[i] for i in np.flatnonzero(vec == 1)], complete
        (['atelectasis', 'laminar atelectasis'], True)
    """
    complete = terms is not None and not (EXCLUDE in terms or set(terms) <= PARTIAL)
    vec = np.full(len(PADCHEST_LABELS), 0.0 if complete else math.nan, dtype=np.float32)
    for t in terms or []:
        for u in (t, *(padchest_ancestors(t) if hierarchy else ())):
            vec[_POSITION[u]] = 1.0
    return vec, complete


@DATASETS.register("padchest")
def read_padchest(root: Path, *, split: str | None, errors: ErrorCollector, csv: str | None = None,
                  label_space: str = "padchest", hierarchy: bool = True,
                  views: str | Sequence[str] = FRONTAL_VIEWS, exclude: Iterable[str] = ()) -> Manifest:
    """Read PadChest under ``root``.

    Args:
        root: dataset folder (holding the CSV and the image folders).
        split: PadChest has no official split; must be None.
        errors: the error policy.
        csv: the CSV file name, if not the standard one.
        label_space: ``"padchest"`` (the 193 terms) or ``"cxr"`` (the harmonised vocabulary).
        hierarchy: a listed term also sets its PadChest parent terms.
        views: ``Projection`` codes to keep (default PA and AP), or ``"*"`` for all.
        exclude: ImageIDs to leave out.
    """
    if split is not None:
        raise ValueError("padchest has no official split; use medzoo.data.patient_split")
    if label_space not in ("padchest", "cxr"):
        raise ValueError(f"padchest: label_space must be 'padchest' or 'cxr', got {label_space!r}")
    keep = view_filter("padchest", views)
    table = read_csv(_csv_path(root, csv), errors)
    for col in (*REQUIRED, *(("Projection",) if keep is not None else ())):
        table.column(col)  # without Projection the view filter would drop every image
    records, unlabelled = [], 0
    for line, row, image, terms in _parse_rows(table, root, errors, set(exclude)):
        vec, complete = term_vector(terms, hierarchy=hierarchy)
        unlabelled += terms is None
        projection = row.get("Projection", "").strip()
        meta = {"source": (str(table.path), line), "projection": projection, "view": projection or "UNKNOWN",
                "terms": list(terms or []), "labelled": terms is not None, "complete": complete,
                "sex": row.get("PatientSex_DICOM", "").strip(), "study_date": row.get("StudyDate_DICOM", "").strip()}
        records.append(Record(id=row["ImageID"].strip(), patient_id=row["PatientID"].strip(), image=image,
                              labels={"findings": vec}, meta=meta))
    if unlabelled:
        log.warning("padchest: %d image(s) have no Labels; their findings are NaN", unlabelled)
    records = keep_views("padchest", drop_duplicate_ids(records, errors), keep)
    manifest = make_manifest("padchest", root, records, {"findings": list(PADCHEST_LABELS)}, None, errors,
                             {"findings"})
    return relabel(manifest) if label_space == "cxr" else manifest
