"""RSNA Pneumonia Detection Challenge (Kaggle, 2018): boxes, detailed classes, DICOM images.

Files under ``root`` (as unpacked from Kaggle):

- ``stage_2_train_labels.csv``: ``patientId,x,y,width,height,Target``, one row per box; a ``Target = 0`` row has
  empty box fields, and every row of one ``patientId`` has the same Target. Boxes are ``(x, y, width, height)`` in
  the pixels of the 1024 x 1024 image.
- ``stage_2_detailed_class_info.csv``: ``patientId,class`` with ``Normal``, ``No Lung Opacity / Not Normal`` or
  ``Lung Opacity`` (repeated once per box row); ``Lung Opacity`` exactly when ``Target = 1``.
- ``stage_2_train_images/{patientId}.dcm`` (``.png`` / ``.jpg`` copies are accepted too).

One record per ``patientId`` (each is one image; the challenge gives no other patient key, so
``patient_id == patientId``). ``labels["findings"]`` over ``["Lung Opacity", "Pneumonia"]`` is ``[Target,
Target]``, TorchXRayVision's reading of the challenge (a box marks an opacity suspicious for pneumonia);
``labels["rsna"]`` is the detailed class index over :data:`RSNA_CLASSES`. ``meta``: ``boxes`` (list of
``{"label": "Lung Opacity", "box": (x, y, w, h)}``), ``no_finding`` (1.0 for ``Normal``, else 0.0, for
:func:`~medzoo.data.labels.relabel`), ``detailed_class`` and ``source``.

The images are NIH ChestX-ray14 images (Shih et al. 2019), and COVIDx-CXR reuses RSNA images: never train on
one of these and test on another (the patient-level leakage check only compares ids within one dataset).

Example:
    >>> m = open_dataset("rsna-pneumonia", "/data/rsna-pneumonia-detection-challenge")  # doctest: +SKIP
    >>> m.label_names["rsna"]  # doctest: +SKIP
    ['Normal', 'No Lung Opacity / Not Normal', 'Lung Opacity']
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import (
    CsvTable,
    DirIndex,
    drop_duplicate_ids,
    make_manifest,
    parse_float,
    read_csv,
    row_dict,
)
from medzoo.data.readers._registry import DATASETS

__all__ = ["RSNA_CLASSES", "RSNA_FINDINGS", "read_rsna"]

#: The detailed classes of ``stage_2_detailed_class_info.csv``, in this index order.
RSNA_CLASSES = ["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"]
RSNA_FINDINGS = ["Lung Opacity", "Pneumonia"]
LABELS_CSV = "stage_2_train_labels.csv"
CLASSES_CSV = "stage_2_detailed_class_info.csv"
IMAGE_DIR = "stage_2_train_images"
EXTENSIONS = (".dcm", ".dicom", ".png", ".jpg")
_BOX = ("x", "y", "width", "height")


def _label_row(table: CsvTable, line: int, fields: list[str]) -> tuple[str, int, tuple | None]:
    """-> (patientId, Target, box or None)."""
    row = row_dict(table, line, fields)
    pid, target = row["patientId"].strip(), row["Target"].strip()
    if not pid:
        raise DatasetFormatError(table.path, "empty patientId", line)
    if target not in ("0", "1"):
        raise DatasetFormatError(table.path, f"column 'Target': expected 0 or 1, got {target!r}", line)
    cells = [row[k] for k in _BOX]
    if target == "0":
        if any(c.strip() for c in cells):
            raise DatasetFormatError(table.path, "a Target = 0 row must have empty x, y, width and height", line)
        return pid, 0, None
    box = tuple(parse_float(c, table.path, line, k) for c, k in zip(cells, _BOX))
    if any(math.isnan(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise DatasetFormatError(table.path, f"bad box {box}; a Target = 1 row needs x, y and positive width, height",
                                 line)
    return pid, 1, box


def _read_labels(path: Path, errors: ErrorCollector) -> dict[str, dict]:
    table = read_csv(path, errors)
    for col in ("patientId", *_BOX, "Target"):
        table.column(col)
    out: dict[str, dict] = {}
    for line, fields in table.rows:
        try:
            pid, target, box = _label_row(table, line, fields)
            entry = out.setdefault(pid, {"line": line, "target": target, "boxes": []})
            if entry["target"] != target:
                raise DatasetFormatError(path, f"patientId {pid!r} has Target {target} here but {entry['target']} "
                                         f"on line {entry['line']}", line)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        if box is not None:
            entry["boxes"].append({"label": "Lung Opacity", "box": box, "source": (str(path), line)})
    return out


def _read_classes(path: Path, errors: ErrorCollector) -> dict[str, tuple[int, int]]:
    """patientId -> (class index, line)."""
    table = read_csv(path, errors)
    table.column("patientId"), table.column("class")
    out: dict[str, tuple[int, int]] = {}
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
            pid, name = row["patientId"].strip(), row["class"].strip()
            if name not in RSNA_CLASSES:
                raise DatasetFormatError(path, f"column 'class': unknown class {name!r}; expected one of "
                                         f"{RSNA_CLASSES}", line)
            cls = RSNA_CLASSES.index(name)
            if pid in out and out[pid][0] != cls:
                raise DatasetFormatError(path, f"patientId {pid!r} is {name!r} here but "
                                         f"{RSNA_CLASSES[out[pid][0]]!r} on line {out[pid][1]}", line)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        out.setdefault(pid, (cls, line))
    return out


def _record(pid: str, entry: dict, cls: tuple[int, int] | None, labels_path: Path, classes_path: Path,
            image: str | None, folder: Path) -> Record:
    line = entry["line"]
    if cls is None:
        raise DatasetFormatError(labels_path, f"patientId {pid!r} has no row in {classes_path.name}", line)
    if (cls[0] == RSNA_CLASSES.index("Lung Opacity")) != (entry["target"] == 1):
        raise DatasetFormatError(classes_path, f"class {RSNA_CLASSES[cls[0]]!r} contradicts Target "
                                 f"{entry['target']} ({labels_path.name} line {line}); 'Lung Opacity' goes with "
                                 "Target 1", cls[1])
    if image is None:
        raise DatasetFormatError(labels_path, f"image not found: {folder / pid}{{{','.join(EXTENSIONS)}}}", line)
    target = float(entry["target"])
    meta = {"source": (str(labels_path), line), "boxes": entry["boxes"], "detailed_class": RSNA_CLASSES[cls[0]],
            "no_finding": float(cls[0] == 0)}
    return Record(id=pid, patient_id=pid, image=image,
                  labels={"findings": np.array([target, target], dtype=np.float32), "rsna": cls[0]}, meta=meta)


@DATASETS.register("rsna-pneumonia")
def read_rsna(root: Path, *, split: str | None, errors: ErrorCollector, labels_csv: str = LABELS_CSV,
              classes_csv: str = CLASSES_CSV, image_dir: str = IMAGE_DIR) -> Manifest:
    """Read the RSNA Pneumonia Detection training set under ``root``.

    Args:
        root: folder holding the two CSV files and the image folder.
        split: ``"train"`` or None (only the training labels are public).
        errors: the error policy.
        labels_csv: the box file relative to ``root``.
        classes_csv: the detailed class file relative to ``root``.
        image_dir: the image folder relative to ``root``.
    """
    if split not in (None, "train"):
        raise ValueError(f"rsna-pneumonia: unknown split {split!r}; expected 'train' or None")
    labels_path, classes_path, folder = root / labels_csv, root / classes_csv, root / image_dir
    entries = _read_labels(labels_path, errors)
    classes = _read_classes(classes_path, errors)
    index, records = DirIndex(), []
    for pid, entry in entries.items():
        image = next((p for ext in EXTENSIONS if (p := index.find(pid + ext, [folder]))), None)
        try:
            records.append(_record(pid, entry, classes.get(pid), labels_path, classes_path, image, folder))
        except DatasetFormatError as e:
            errors.handle(e)
    label_names = {"findings": list(RSNA_FINDINGS), "rsna": list(RSNA_CLASSES)}
    records = drop_duplicate_ids(records, errors)
    return make_manifest("rsna-pneumonia", root, records, label_names, split, errors, {"findings"})
