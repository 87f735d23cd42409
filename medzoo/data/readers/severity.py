"""COVID severity scores, in their two published files and scales (never mixed).

- **Cohen et al.** ``covid-severity-scores.csv``: ``#`` comment lines, then ``filename,geographic_mean,opacity_mean``.
  Geographic extent 0-8 and opacity 0-6. ``label_names["severity"] == ["geographic", "opacity"]``.
  Patient ids come from the repository's ``metadata.csv`` (``patientid``, any capitalisation, and ``filename``;
  RFC 4180, so quoted clinical notes may span lines) when it is present, else each image is its own patient
  (logged).
- **COVIDNet-S** ``severity_annotations.csv``: ``filename,Geographic,Opacity,Sum,Product,patientid,dataset,...``.
  Both scores run 0-8 here, so the opacity is named differently:
  ``label_names["severity"] == ["geographic", "opacity_0_8"]``.

``labels["severity"]`` is a float vector (NaN where a row is unscored); ``meta["scale"]`` is ``"cohen"`` or
``"covidnet-s"`` and ``meta["ranges"]`` gives each score's (min, max). A score outside its range is an error.
The CSV is found in ``root`` or ``root/annotations``; images in ``image_dir``, ``root/images`` or ``root``.

Example:
    >>> m = open_dataset("covid-severity", "/data/covid-chestxray-dataset")  # doctest: +SKIP
    >>> m.label_names["severity"]  # doctest: +SKIP
    ['geographic', 'opacity']
"""

from __future__ import annotations

import logging
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

__all__ = ["SCALES", "read_severity"]

log = logging.getLogger(__name__)

#: scale -> (file name, [(column, label name, (min, max))], patient column or None)
SCALES = {
    "cohen": ("covid-severity-scores.csv",
              [("geographic_mean", "geographic", (0.0, 8.0)), ("opacity_mean", "opacity", (0.0, 6.0))], None),
    "covidnet-s": ("severity_annotations.csv",
                   [("Geographic", "geographic", (0.0, 8.0)), ("Opacity", "opacity_0_8", (0.0, 8.0))], "patientid"),
}


def _find_csv(root: Path, csv: str | None) -> tuple[Path, str]:
    if csv is not None:
        path = root / csv
        for scale, (name, *_) in SCALES.items():
            if path.name == name:
                return path, scale
        return path, ""
    for folder in (root, root / "annotations"):
        for scale, (name, *_) in SCALES.items():
            if (folder / name).exists():
                return folder / name, scale
    raise DatasetFormatError(root, f"no severity file found ({', '.join(s[0] for s in SCALES.values())} in root or "
                             "annotations/)")


def _detect(table: CsvTable) -> str:
    for scale, (_, columns, _pid) in SCALES.items():
        if all(c in table.header for c, _, _ in columns):
            return scale
    raise DatasetFormatError(table.path, f"unrecognised severity header {table.header}; expected "
                             "filename,geographic_mean,opacity_mean (Cohen) or filename,Geographic,Opacity,... "
                             "(COVIDNet-S)", table.header_line)


def _cohen_patients(root: Path, errors: ErrorCollector) -> dict[str, str]:
    path = root / "metadata.csv"
    if not path.exists():
        return {}
    table = read_csv(path, errors)
    by_lower = {h.lower(): h for h in table.header}  # older copies spell the column "Patientid"
    pid, fname = by_lower.get("patientid"), by_lower.get("filename")
    if pid is None or fname is None:
        log.warning("covid-severity: %s has no patientid/filename columns (header %s)", path, table.header)
        return {}
    out = {}
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        out[row[fname].strip()] = row[pid].strip()
    return out


def _scores(row: dict[str, str], columns: list, path: Path, line: int) -> np.ndarray:
    values = []
    for col, name, (lo, hi) in columns:
        v = parse_float(row[col], path, line, col)
        if not math.isnan(v) and not lo <= v <= hi:
            raise DatasetFormatError(path, f"column {col!r}: {v} is outside the {name} range {lo:g}-{hi:g}", line)
        values.append(v)
    return np.array(values, dtype=np.float32)


@DATASETS.register("covid-severity")
def read_severity(root: Path, *, split: str | None, errors: ErrorCollector, csv: str | None = None,
                  image_dir: str | None = None) -> Manifest:
    """Read a COVID severity score file under ``root``.

    Args:
        root: dataset folder.
        split: no official split; must be None.
        errors: the error policy.
        csv: the score file relative to ``root`` (format detected from its header).
        image_dir: image folder relative to ``root``.
    """
    if split is not None:
        raise ValueError("covid-severity has no official split; use medzoo.data.patient_split")
    path, _ = _find_csv(root, csv)
    table = read_csv(path, errors, comment="#")
    scale = _detect(table)
    table.column("filename")
    _, columns, pid_col = SCALES[scale]
    patients = _cohen_patients(root, errors) if pid_col is None else {}
    folders = [root / image_dir] if image_dir else [root / "images", root]
    index, records, own = DirIndex(), [], 0
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
            name = row["filename"].strip()
            vec = _scores(row, columns, path, line)
            image = index.find(name, folders) if name and "/" not in name else None
            if image is None:
                raise DatasetFormatError(path, f"image not found: {name!r} (looked in "
                                         f"{', '.join(map(str, folders))})", line)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        patient = row[pid_col].strip() if pid_col else patients.get(name, "")
        own += not patient
        meta = {"source": (str(path), line), "scale": scale, "ranges": {n: r for _, n, r in columns}}
        records.append(Record(id=name, patient_id=patient or name, image=image, labels={"severity": vec}, meta=meta))
    if own:
        log.warning("covid-severity: %d image(s) have no patient id; each is treated as its own patient", own)
    label_names = {"severity": [n for _, n, _ in columns]}
    records = drop_duplicate_ids(records, errors)
    return make_manifest("covid-severity", root, records, label_names, None, errors, {"severity"})
