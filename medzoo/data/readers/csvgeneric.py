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
image path. ``mask_col`` names an optional segmentation mask path column (``meta["mask"]``, a one-item list, as
for the TB sets; blank means no mask). Other columns go to ``meta["columns"]``.

Example:
    >>> m = open_dataset("csv", "my/labels.csv", image_col="file", label_cols=["tb"], task="tb",
    ...                  type="class", classes=["0", "1"], patient_col="patient")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
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


@dataclass
class _Columns:
    image: str
    labels: list[str]
    type: str
    names: list[str]
    task: str
    patient: str | None
    id: str | None
    mask: str | None


def _path(root: Path, text: str, line: int, what: str) -> str:
    # A folder is accepted as an image (a DICOM series), never as a mask.
    return require_file(resolve_path(root.parent, text, root, line, allow_absolute=True), root, line, what,
                        allow_dir=what == "image")


def _record(root: Path, line: int, row: dict[str, str], c: _Columns) -> Record:
    value = _label(row, c.labels, c.type, c.names, root, line)
    image = _path(root, row[c.image], line, "image")
    mask = row[c.mask].strip() if c.mask else ""
    patient = row[c.patient].strip() if c.patient else row[c.image].strip()
    if not patient:
        raise DatasetFormatError(root, f"empty patient id in column {c.patient!r}", line)
    extra = {k: v for k, v in row.items() if k not in (c.image, c.patient, c.id, c.mask, *c.labels)}
    meta: dict = {"source": (str(root), line), "columns": extra}
    if mask:
        meta["mask"] = [_path(root, mask, line, "mask")]
    rid = row[c.id].strip() if c.id else row[c.image].strip()
    return Record(id=rid, patient_id=patient, image=image, labels={c.task: value}, meta=meta)


@DATASETS.register("csv")
def read_csv_dataset(root: Path, *, split: str | None, errors: ErrorCollector, image_col: str,
                     label_cols: list[str] | str, task: str, type: str = "multilabel",
                     patient_col: str | None = None, id_col: str | None = None,
                     classes: list[str] | None = None, mask_col: str | None = None,
                     delimiter: str = ",") -> Manifest:
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
        mask_col: column with a mask path (relative like the images), or None.
        delimiter: field separator.
    """
    if type not in TYPES:
        raise ValueError(f"csv: type must be one of {TYPES}, got {type!r}")
    cols = [label_cols] if isinstance(label_cols, str) else list(label_cols)
    table = read_csv(root, errors, delimiter=delimiter)
    _check_columns(table, image_col, cols, patient_col, id_col, type)
    if mask_col:
        table.column(mask_col)
    names = _classes(table, cols[0], classes) if type == "class" else list(cols)
    cfg = _Columns(image_col, cols, type, names, task, patient_col, id_col, mask_col)
    records = []
    for line, fields in table.rows:
        try:
            records.append(_record(root, line, row_dict(table, line, fields), cfg))
        except DatasetFormatError as e:
            errors.handle(e)
    if patient_col is None:
        log.warning("csv: no patient_col given; each image is treated as its own patient")
    vector = {task} if type != "class" else set()
    return make_manifest("csv", root, drop_duplicate_ids(records, errors), {task: names}, split, errors, vector)
