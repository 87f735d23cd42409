"""A generic "image paths plus label columns" CSV reader, for fine-tuning on your own data.

``open_dataset("csv", "labels.csv", image_col="path", label_cols=[...], task="findings", type="multilabel")``

- ``type="multilabel"``: each label column holds 1 / 0 (also ``1.0``, ``true``/``false``) or blank (NaN); the
  task value is a float vector ordered as ``label_cols``.
- ``type="class"``: one label column; its value is a class name from ``classes`` (default: the sorted distinct
  values in the file). The task value is the int class index; blank is NaN.
- ``type="regression"``: numeric columns (blank = NaN); the task value is a float vector.

Image paths (PNG, JPEG, DICOM, NIfTI; not decoded here) are relative to the CSV's folder (or absolute);
``..`` that escapes that folder is an error. ``patient_col`` names the patient id column; without it every image
is its own patient (logged, since patient-level splits then cannot group studies). ``id_col`` defaults to the
image path. Other columns go to ``meta["columns"]``.

Example:
    >>> m = open_dataset("csv", "my/labels.csv", image_col="file", label_cols=["tb"], task="tb",
    ...                  type="class", classes=["0", "1"], patient_col="patient")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import (
    CsvTable,
    drop_duplicate_ids,
    make_manifest,
    parse_float,
    read_csv,
    require_file,
    resolve_path,
    row_dict,
)
from medzoo.data.readers._registry import DATASETS

__all__ = ["read_csv_dataset"]

log = logging.getLogger(__name__)

TYPES = ("multilabel", "class", "regression")
_BINARY = {"1": 1.0, "1.0": 1.0, "true": 1.0, "0": 0.0, "0.0": 0.0, "false": 0.0}


def _binary(text: str, path: Path, line: int, col: str) -> float:
    text = text.strip().lower()
    if not text:
        return math.nan
    if text not in _BINARY:
        raise DatasetFormatError(path, f"column {col!r}: unknown label value {text!r}; expected 1, 0 or blank", line)
    return _BINARY[text]


def _label(row: dict[str, str], cols: list[str], kind: str, classes: list[str] | None, path: Path, line: int):
    if kind == "multilabel":
        return np.array([_binary(row[c], path, line, c) for c in cols], dtype=np.float32)
    if kind == "regression":
        return np.array([parse_float(row[c], path, line, c) for c in cols], dtype=np.float32)
    value = row[cols[0]].strip()
    if not value:
        return math.nan
    if value not in classes:  # type: ignore[operator]
        raise DatasetFormatError(path, f"column {cols[0]!r}: unknown label {value!r}; expected one of {classes}", line)
    return classes.index(value)  # type: ignore[union-attr]


def _check_columns(table: CsvTable, image_col: str, cols: list[str], patient_col: str | None,
                   id_col: str | None, kind: str) -> None:
    for col in [image_col, *cols, *(c for c in (patient_col, id_col) if c)]:
        table.column(col)
    if kind == "class" and len(cols) != 1:
        raise ValueError(f"csv: type='class' takes exactly one label column, got {cols}")


def _classes(table: CsvTable, col: str, classes: list[str] | None) -> list[str]:
    if classes is not None:
        return [str(c) for c in classes]
    index = table.header.index(col)
    return sorted({f[index].strip() for _, f in table.rows if len(f) > index and f[index].strip()})


@DATASETS.register("csv")
def read_csv_dataset(root: Path, *, split: str | None, errors: ErrorCollector, image_col: str,
                     label_cols: list[str] | str, task: str, type: str = "multilabel",
                     patient_col: str | None = None, id_col: str | None = None,
                     classes: list[str] | None = None, delimiter: str = ",") -> Manifest:
    """Read a CSV of image paths and label columns (``root`` is the CSV file).

    Args:
        root: the CSV file.
        split: recorded as the manifest's split name.
        errors: the error policy.
        image_col: column with the image path.
        label_cols: label column(s).
        task: the task name to store labels under.
        type: ``"multilabel"``, ``"class"`` or ``"regression"``.
        patient_col: patient id column (default: none; each image is its own patient).
        id_col: record id column (default: the image path as written).
        classes: class names for ``type="class"`` (default: sorted distinct values).
        delimiter: field separator.
    """
    if type not in TYPES:
        raise ValueError(f"csv: type must be one of {TYPES}, got {type!r}")
    cols = [label_cols] if isinstance(label_cols, str) else list(label_cols)
    table = read_csv(root, errors, delimiter=delimiter)
    _check_columns(table, image_col, cols, patient_col, id_col, type)
    names = _classes(table, cols[0], classes) if type == "class" else list(cols)
    records = []
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
            value = _label(row, cols, type, names, root, line)
            image = require_file(resolve_path(root.parent, row[image_col], root, line, allow_absolute=True), root, line)
            patient = row[patient_col].strip() if patient_col else row[image_col].strip()
            if not patient:
                raise DatasetFormatError(root, f"empty patient id in column {patient_col!r}", line)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        rid = row[id_col].strip() if id_col else row[image_col].strip()
        extra = {k: v for k, v in row.items() if k not in (image_col, patient_col, id_col, *cols)}
        meta = {"source": (str(root), line), "columns": extra}
        records.append(Record(id=rid, patient_id=patient, image=image, labels={task: value}, meta=meta))
    if patient_col is None:
        log.warning("csv: no patient_col given; each image is treated as its own patient")
    vector = {task} if type != "class" else set()
    return make_manifest("csv", root, drop_duplicate_ids(records, errors), {task: names}, split, errors, vector)
