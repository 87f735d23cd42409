"""VinDr-CXR in its Kaggle challenge form: ``train.csv`` with one row per (image, radiologist, box).

Header: ``image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max`` (``class_id`` may be absent). Rows of
``No finding`` (class 14) have empty box fields. Images are ``train/{image_id}.dicom`` (``.png`` / ``.jpg``
copies are accepted too).

One record per image. ``meta["boxes"]`` maps each radiologist id to their boxes
``[{"label", "box": (x_min, y_min, x_max, y_max)}]`` (an empty list for a "No finding" read),
``meta["votes"]`` counts the radiologists who marked each finding, and ``meta["radiologists"]`` lists them.
The ``consensus`` option makes the findings vector from the votes: ``"any"`` (at least one reader; default),
``"majority"`` (more than half) or ``"all"``. ``meta["no_finding"]`` is 1.0 when that vector has no finding
(class 14, ``No finding``, under the consensus), else 0.0; :func:`~medzoo.data.labels.relabel` fills the
vocabulary's ``No Finding`` from it. The challenge release has no patient ids, so each image is its own
patient (``patient_id == image_id``). The PhysioNet release's CSVs are not read here (their columns are unverified).

Example:
    >>> m = open_dataset("vindr-cxr", "/data/vinbigdata", consensus="majority")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import CsvTable, DirIndex, make_manifest, parse_float, read_csv, row_dict
from medzoo.data.readers._registry import DATASETS

__all__ = ["VINDR_LABELS", "read_vindr"]

#: Classes 0..13 of the challenge, spelled as in ``train.csv``; class 14 is ``No finding``.
VINDR_LABELS = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis",
]
NO_FINDING = "No finding"
CONSENSUS = ("any", "majority", "all")
EXTENSIONS = (".dicom", ".dcm", ".png", ".jpg")


def _parse_row(table: CsvTable, line: int, fields: list[str]) -> tuple[str, str, int | None, tuple | None]:
    """-> (image_id, rad_id, class index or None for No finding, box or None)."""
    row = row_dict(table, line, fields)
    image_id, rad, name = row["image_id"].strip(), row["rad_id"].strip(), row["class_name"].strip()
    if not image_id or not rad:
        raise DatasetFormatError(table.path, "empty image_id or rad_id", line)
    if name == NO_FINDING:
        idx = None
    elif name in VINDR_LABELS:
        idx = VINDR_LABELS.index(name)
    else:
        raise DatasetFormatError(table.path, f"unknown class_name {name!r}; expected one of {VINDR_LABELS} or "
                                 f"{NO_FINDING!r}", line)
    if "class_id" in row and row["class_id"].strip() != str(14 if idx is None else idx):
        raise DatasetFormatError(table.path, f"class_id {row['class_id']!r} does not match class_name {name!r} "
                                 f"(expected {14 if idx is None else idx})", line)
    cells = [row[k] for k in ("x_min", "y_min", "x_max", "y_max")]
    if idx is None:
        if any(c.strip() for c in cells):
            raise DatasetFormatError(table.path, "a 'No finding' row must have empty box fields", line)
        return image_id, rad, None, None
    box = tuple(parse_float(c, table.path, line, k) for c, k in zip(cells, ("x_min", "y_min", "x_max", "y_max")))
    if any(math.isnan(v) for v in box) or box[0] > box[2] or box[1] > box[3]:
        raise DatasetFormatError(table.path, f"bad box {box}; expected x_min <= x_max and y_min <= y_max", line)
    return image_id, rad, idx, box


def _group(table: CsvTable, errors: ErrorCollector) -> dict[str, dict]:
    images: dict[str, dict] = {}
    for line, fields in table.rows:
        try:
            image_id, rad, idx, box = _parse_row(table, line, fields)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        entry = images.setdefault(image_id, {"line": line, "boxes": {}, "marks": {}})
        entry["boxes"].setdefault(rad, [])
        entry["marks"].setdefault(rad, set())
        if idx is not None:
            entry["boxes"][rad].append({"label": VINDR_LABELS[idx], "box": box, "source": (str(table.path), line)})
            entry["marks"][rad].add(idx)
    return images


def _labels(marks: dict[str, set[int]], consensus: str) -> tuple[np.ndarray, np.ndarray]:
    votes = np.zeros(len(VINDR_LABELS), dtype=np.float32)
    for classes in marks.values():
        for idx in classes:
            votes[idx] += 1
    n = len(marks)
    if consensus == "any":
        vec = votes > 0
    elif consensus == "majority":
        vec = votes * 2 > n
    else:
        vec = votes == n
    return vec.astype(np.float32), votes


@DATASETS.register("vindr-cxr")
def read_vindr(root: Path, *, split: str | None, errors: ErrorCollector, consensus: str = "any",
               csv: str = "train.csv", image_dir: str = "train") -> Manifest:
    """Read VinDr-CXR (Kaggle form) under ``root``.

    Args:
        root: folder holding ``train.csv`` and the ``train/`` images.
        split: ``"train"`` or None (only the training annotations are public).
        errors: the error policy.
        consensus: ``"any"``, ``"majority"`` or ``"all"`` radiologists to call a finding positive.
        csv: annotation file name relative to ``root``.
        image_dir: image folder relative to ``root``.
    """
    if consensus not in CONSENSUS:
        raise ValueError(f"vindr-cxr: consensus must be one of {CONSENSUS}, got {consensus!r}")
    if split not in (None, "train"):
        raise ValueError(f"vindr-cxr: unknown split {split!r}; expected 'train' or None")
    table = read_csv(root / csv, errors)
    for col in ("image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max"):
        table.column(col)
    index, folder = DirIndex(), root / image_dir
    records = []
    for image_id, entry in _group(table, errors).items():
        image = next((p for ext in EXTENSIONS if (p := index.find(image_id + ext, [folder]))), None)
        if image is None:
            errors.handle(DatasetFormatError(table.path, f"image not found: {folder / image_id}"
                                             f"{{{','.join(EXTENSIONS)}}}", entry["line"]))
            continue
        vec, votes = _labels(entry["marks"], consensus)
        meta = {"source": (str(table.path), entry["line"]), "no_finding": float(not vec.any()),
                "boxes": entry["boxes"], "votes": votes,
                "radiologists": list(entry["boxes"]), "consensus": consensus}
        records.append(Record(id=image_id, patient_id=image_id, image=image, labels={"findings": vec}, meta=meta))
    return make_manifest("vindr-cxr", root, records, {"findings": list(VINDR_LABELS)}, split, errors, {"findings"})
