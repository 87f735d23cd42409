"""CheXpert v1.0 (full or "small" release): ``train.csv`` and ``valid.csv``.

``root`` is the folder that holds the two CSV files. Their ``Path`` column starts with the release folder
(``CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg``). Paths resolve against the parent of
``root`` when ``root`` is that release folder, otherwise against ``root`` with the first component stripped;
either way they must stay inside ``root`` (DECISIONS 9).

Labels use CheXpert coding: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank not mentioned (NaN).
The ``uncertainty`` option maps uncertain labels: ``"u-ignore"`` (NaN, masked by the loss; default),
``"u-zeros"`` (0) or ``"u-ones"`` (1). ``labels["findings"]`` follows the files' column order.
``meta``: ``view`` (Frontal/Lateral), ``projection`` (AP/PA/LL/RL), ``sex``, ``age``, ``study``,
``official_split`` (``"train"`` / ``"valid"``) and ``source``.

Example:
    >>> m = open_dataset("chexpert", "/data/CheXpert-v1.0-small", uncertainty="u-ones")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import (
    CsvTable,
    drop_duplicate_ids,
    make_manifest,
    parse_float,
    read_csv,
    row_dict,
    select_split,
)
from medzoo.data.readers._registry import DATASETS

__all__ = ["CHEXPERT_LABELS", "UNCERTAINTY_POLICIES", "chexpert_value", "read_chexpert"]

#: The 14 CheXpert observations, spelled as in the CSV header.
CHEXPERT_LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
#: uncertainty policy -> value that replaces -1.
UNCERTAINTY_POLICIES = {"u-ignore": math.nan, "u-zeros": 0.0, "u-ones": 1.0}
SPLITS = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid"}
_PATIENT = re.compile(r"^patient\d+$")
_STUDY = re.compile(r"^study\d+$")


def chexpert_value(text: str, uncertain: float, path: Path | str, line: int, column: str) -> float:
    """Decode one CheXpert-coded cell (1 / 0 / -1 / blank) under an uncertainty replacement value."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.inf
    if value == 1.0 or value == 0.0:
        return value
    if value == -1.0:
        return uncertain
    raise DatasetFormatError(path, f"column {column!r}: unknown label value {text!r}; expected 1.0, 0.0, -1.0 or "
                             "blank", line)


def label_columns(table: CsvTable, known_meta: tuple[str, ...]) -> list[str]:
    """CheXpert-coded label columns of a header; an unknown column is an error naming the header line."""
    out = []
    for col in table.header:
        if col in known_meta:
            continue
        if col not in CHEXPERT_LABELS:
            raise DatasetFormatError(table.path, f"unknown column {col!r}; expected {list(known_meta)} and CheXpert "
                                     f"labels {CHEXPERT_LABELS}", table.header_line)
        out.append(col)
    return out


def _resolve(root: Path, rel: str, path: Path, line: int) -> str:
    rel = rel.strip().replace("\\", "/")
    if not rel or rel.startswith("/") or os.path.isabs(rel):
        raise DatasetFormatError(path, f"bad image path {rel!r}; expected a relative path like "
                                 "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", line)
    parts = [p for p in os.path.normpath(rel).split(os.sep) if p]
    root_abs = os.path.abspath(root)
    if ".." in parts:
        raise DatasetFormatError(path, f"path {rel!r} escapes the dataset folder {root_abs} (via '..')", line)
    candidates = []
    if parts[0] == os.path.basename(root_abs):
        candidates.append(os.path.join(os.path.dirname(root_abs), *parts))
    if len(parts) > 1:
        candidates.append(os.path.join(root_abs, *parts[1:]))
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise DatasetFormatError(path, f"image not found: {rel} (tried {', '.join(candidates) or 'nothing'})", line)


def _record(table: CsvTable, line: int, fields: list[str], labels: list[str], uncertain: float, root: Path,
            split: str) -> Record:
    row = row_dict(table, line, fields)
    vec = np.array([chexpert_value(row[c], uncertain, table.path, line, c) for c in labels], dtype=np.float32)
    rel = row["Path"].strip()
    parts = rel.replace("\\", "/").split("/")
    patient = next((p for p in parts if _PATIENT.match(p)), None)
    if patient is None:
        raise DatasetFormatError(table.path, f"no patientNNNNN folder in path {rel!r}", line)
    image = _resolve(root, rel, table.path, line)
    meta = {
        "source": (str(table.path), line), "official_split": split, "view": row.get("Frontal/Lateral", "").strip(),
        "projection": row.get("AP/PA", "").strip(), "sex": row.get("Sex", "").strip(),
        "age": parse_float(row["Age"], table.path, line, "Age") if "Age" in row else math.nan,
        "study": next((p for p in parts if _STUDY.match(p)), ""),
    }
    return Record(id=rel, patient_id=patient, image=image, labels={"findings": vec}, meta=meta)


@DATASETS.register("chexpert")
def read_chexpert(root: Path, *, split: str | None, errors: ErrorCollector, uncertainty: str = "u-ignore",
                  frontal_only: bool = False) -> Manifest:
    """Read CheXpert's ``train.csv`` / ``valid.csv`` under ``root``.

    Args:
        root: folder holding ``train.csv`` and ``valid.csv``.
        split: ``"train"``, ``"valid"`` (alias ``"val"``) or None for both.
        errors: the error policy.
        uncertainty: ``"u-ignore"`` (uncertain -> NaN), ``"u-zeros"`` or ``"u-ones"``.
        frontal_only: keep frontal views only.
    """
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ValueError(f"chexpert: uncertainty must be one of {sorted(UNCERTAINTY_POLICIES)}, got {uncertainty!r}")
    wanted = [SPLITS[split]] if split in SPLITS else ["train", "valid"]
    if split is not None and split not in SPLITS:
        select_split("chexpert", [], split, SPLITS)  # raises listing the valid names
    records: list[Record] = []
    labels: list[str] | None = None
    for name in wanted:
        table = read_csv(root / f"{name}.csv", errors)
        table.column("Path")
        cols = label_columns(table, META_COLUMNS)
        if labels is not None and cols != labels:
            raise DatasetFormatError(table.path, f"label columns {cols} differ from the other file's {labels}",
                                     table.header_line)
        labels = cols
        for line, fields in table.rows:
            try:
                rec = _record(table, line, fields, cols, UNCERTAINTY_POLICIES[uncertainty], root, name)
            except DatasetFormatError as e:
                errors.handle(e)
                continue
            if frontal_only and rec.meta["view"] != "Frontal":
                continue
            records.append(rec)
    records = drop_duplicate_ids(records, errors)
    label_names = {"findings": list(labels or [])}
    return make_manifest("chexpert", root, records, label_names, SPLITS.get(split or ""), errors, {"findings"})
