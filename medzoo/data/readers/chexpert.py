"""CheXpert v1.0 (full or "small" release): ``train.csv`` and ``valid.csv``.

``root`` is the folder that holds the two CSV files. Their ``Path`` column starts with the release folder
(``CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg``). Paths resolve against the parent of
``root`` when ``root`` is that release folder, otherwise against ``root`` with the first component stripped;
either way they must stay inside ``root``, so a crafted CSV cannot point the loader at other files.

Labels use CheXpert coding: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank not mentioned. The
vector (``labels["findings"]``, in the files' column order) is harmonised by :func:`harmonise_chexpert`:

1. a row with ``No Finding = 1`` has no positive or uncertain pathology (the labeler sets No Finding only then),
   so its 12 pathologies become 0; ``Support Devices`` is not a pathology and keeps its own value;
2. a blank ``No Finding`` becomes 0 when any of the 12 pathologies is 1 or -1;
3. the remaining blanks follow ``blank``: ``"zero"`` (default; "not mentioned" counts as negative, as most
   CheXpert training code reads the files) or ``"nan"`` (masked by the loss);
4. uncertain cells follow ``uncertainty``: ``"u-ignore"`` (NaN; default), ``"u-zeros"`` (0) or ``"u-ones"`` (1).

TorchXRayVision's ``CheX_Dataset`` applies rule 1, keeps other blanks NaN (``blank="nan"``), maps -1 to NaN
and drops the No Finding column.

``views`` keeps the frontal PA and AP images by default (as TorchXRayVision keeps PA only); the view code is
``AP/PA`` for frontal rows (``AP``, ``PA``, ``LL``, ``RL``, or ``UNKNOWN`` when blank) and ``L`` for lateral ones;
``views="*"`` keeps everything. The number of images left out per view is logged.
``meta``: ``view``, ``frontal_lateral``, ``projection`` (AP/PA cell), ``sex``, ``age``, ``study``,
``official_split`` (``"train"`` / ``"valid"``) and ``source``.

Example:
    >>> m = open_dataset("chexpert", "/data/CheXpert-v1.0-small", uncertainty="u-ones")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import (
    CsvTable,
    drop_duplicate_ids,
    keep_views,
    make_manifest,
    parse_float,
    read_csv,
    row_dict,
    select_split,
    view_filter,
)
from medzoo.data.readers._registry import DATASETS

__all__ = ["CHEXPERT_LABELS", "UNCERTAINTY_POLICIES", "BLANK_POLICIES", "FRONTAL_VIEWS", "chexpert_value",
           "harmonise_chexpert", "read_chexpert"]

log = logging.getLogger(__name__)

#: The 14 CheXpert observations, spelled as in the CSV header.
CHEXPERT_LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
NO_FINDING, SUPPORT_DEVICES = "No Finding", "Support Devices"
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
#: uncertainty policy -> value that replaces -1.
UNCERTAINTY_POLICIES = {"u-ignore": math.nan, "u-zeros": 0.0, "u-ones": 1.0}
#: blank policy -> value that replaces a blank (not mentioned) cell left after the No Finding rules.
BLANK_POLICIES = {"zero": 0.0, "nan": math.nan}
#: The default ``views``: frontal posteroanterior and anteroposterior images.
FRONTAL_VIEWS = ("PA", "AP")
SPLITS = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid"}
_PROJECTIONS = ("AP", "PA", "LL", "RL", "")
_PATIENT = re.compile(r"^patient\d+$")
_STUDY = re.compile(r"^study\d+$")


def chexpert_value(text: str, path: Path | str, line: int, column: str) -> float:
    """Decode one CheXpert-coded cell: 1.0, 0.0 or -1.0 as they are, NaN for blank; anything else raises."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.inf
    if value in (1.0, 0.0, -1.0):
        return value
    raise DatasetFormatError(path, f"column {column!r}: unknown label value {text!r}; expected 1.0, 0.0, -1.0 or "
                             "blank", line)


def harmonise_chexpert(raw: np.ndarray, columns: Sequence[str], *, uncertain: float, blank: float
                       ) -> tuple[np.ndarray, bool]:
    """Apply the No Finding rules, then the blank and uncertainty policies, to one row of raw CheXpert codes.

    Args:
        raw: ``[len(columns)]`` codes 1 / 0 / -1 / NaN (blank).
        columns: the label column names (any order; No Finding and Support Devices found by name).
        uncertain: the value that replaces -1 (see :data:`UNCERTAINTY_POLICIES`).
        blank: the value that replaces a remaining blank (see :data:`BLANK_POLICIES`).

    Returns:
        ``([len(columns)] float32 vector, conflict)``; ``conflict`` is True when ``No Finding = 1`` sat next to a
        positive or uncertain pathology (never the case in the labeler's output), which rule 1 overrides.

    Example:
        >>> cols = ["No Finding", "Edema", "Support Devices"]
        >>> harmonise_chexpert(np.array([1.0, np.nan, 1.0]), cols, uncertain=np.nan, blank=np.nan)[0]
        array([1., 0., 1.], dtype=float32)
    """
    vec = np.array(raw, dtype=np.float32)
    conflict = False
    if NO_FINDING in columns:
        nf = list(columns).index(NO_FINDING)
        pathologies = [i for i, c in enumerate(columns) if c not in (NO_FINDING, SUPPORT_DEVICES)]
        found = bool(np.isin(vec[pathologies], (1.0, -1.0)).any())
        if vec[nf] == 1.0:
            conflict = found
            vec[pathologies] = 0.0
        elif np.isnan(vec[nf]) and found:
            vec[nf] = 0.0
    vec[np.isnan(vec)] = blank
    vec[vec == -1.0] = uncertain
    return vec, conflict


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


def check_policies(kind: str, uncertainty: str, blank: str) -> tuple[float, float]:
    """The (uncertain, blank) replacement values of the named policies; unknown names raise listing the valid ones."""
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ValueError(f"{kind}: uncertainty must be one of {sorted(UNCERTAINTY_POLICIES)}, got {uncertainty!r}")
    if blank not in BLANK_POLICIES:
        raise ValueError(f"{kind}: blank must be one of {sorted(BLANK_POLICIES)}, got {blank!r}")
    return UNCERTAINTY_POLICIES[uncertainty], BLANK_POLICIES[blank]


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


def _view(row: dict[str, str], path: Path, line: int) -> str:
    side, projection = row["Frontal/Lateral"].strip(), row.get("AP/PA", "").strip()
    if projection not in _PROJECTIONS:
        raise DatasetFormatError(path, f"column 'AP/PA': unknown value {projection!r}; expected AP, PA, LL, RL or "
                                 "blank", line)
    if side == "Lateral":
        return "L"
    if side == "Frontal":
        return projection or "UNKNOWN"
    raise DatasetFormatError(path, f"column 'Frontal/Lateral': unknown value {side!r}; expected Frontal or Lateral",
                             line)


def _record(table: CsvTable, line: int, fields: list[str], labels: list[str], root: Path, split: str
            ) -> tuple[Record, np.ndarray]:
    row = row_dict(table, line, fields)
    raw = np.array([chexpert_value(row[c], table.path, line, c) for c in labels], dtype=np.float32)
    rel = row["Path"].strip()
    parts = rel.replace("\\", "/").split("/")
    patient = next((p for p in parts if _PATIENT.match(p)), None)
    if patient is None:
        raise DatasetFormatError(table.path, f"no patientNNNNN folder in path {rel!r}", line)
    view = _view(row, table.path, line)
    image = _resolve(root, rel, table.path, line)
    meta = {
        "source": (str(table.path), line), "official_split": split, "view": view,
        "frontal_lateral": row["Frontal/Lateral"].strip(), "projection": row.get("AP/PA", "").strip(),
        "sex": row.get("Sex", "").strip(),
        "age": parse_float(row["Age"], table.path, line, "Age") if "Age" in row else math.nan,
        "study": next((p for p in parts if _STUDY.match(p)), ""),
    }
    return Record(id=rel, patient_id=patient, image=image, labels={}, meta=meta), raw


def apply_harmonisation(kind: str, records: list[Record], raws: list[np.ndarray], columns: list[str],
                        uncertain: float, blank: float) -> None:
    """Set each record's ``findings`` from its raw codes (see :func:`harmonise_chexpert`); logs conflicting rows."""
    conflicts = 0
    for rec, raw in zip(records, raws):
        rec.labels["findings"], conflict = harmonise_chexpert(raw, columns, uncertain=uncertain, blank=blank)
        conflicts += conflict
    if conflicts:
        log.warning("%s: %d row(s) have No Finding = 1 next to a positive or uncertain pathology; the pathologies "
                    "were set to 0 (the No Finding rule)", kind, conflicts)


def _read_file(table: CsvTable, cols: list[str], root: Path, split: str, errors: ErrorCollector,
               out: list[tuple[Record, np.ndarray]]) -> None:
    for line, fields in table.rows:
        try:
            out.append(_record(table, line, fields, cols, root, split))
        except DatasetFormatError as e:
            errors.handle(e)


@DATASETS.register("chexpert")
def read_chexpert(root: Path, *, split: str | None, errors: ErrorCollector, uncertainty: str = "u-ignore",
                  blank: str = "zero", views: str | Sequence[str] = FRONTAL_VIEWS) -> Manifest:
    """Read CheXpert's ``train.csv`` / ``valid.csv`` under ``root``.

    Args:
        root: folder holding ``train.csv`` and ``valid.csv``.
        split: ``"train"``, ``"valid"`` (alias ``"val"``) or None for both.
        errors: the error policy.
        uncertainty: ``"u-ignore"`` (uncertain -> NaN), ``"u-zeros"`` or ``"u-ones"``.
        blank: ``"zero"`` (not mentioned -> 0) or ``"nan"`` (not mentioned -> NaN).
        views: view codes to keep (default PA and AP), or ``"*"`` for all.
    """
    uncertain, blank_value = check_policies("chexpert", uncertainty, blank)
    keep = view_filter("chexpert", views)
    if split is not None and split not in SPLITS:
        select_split("chexpert", [], split, SPLITS)  # raises listing the valid names
    wanted = [SPLITS[split]] if split is not None else ["train", "valid"]
    parsed: list[tuple[Record, np.ndarray]] = []
    labels: list[str] | None = None
    for name in wanted:
        table = read_csv(root / f"{name}.csv", errors)
        for col in ("Path", "Frontal/Lateral", *(("AP/PA",) if keep is not None else ())):
            table.column(col)  # without AP/PA the view filter would drop every frontal image
        cols = label_columns(table, META_COLUMNS)
        if labels is not None and cols != labels:
            raise DatasetFormatError(table.path, f"label columns {cols} differ from the other file's {labels}",
                                     table.header_line)
        labels = cols
        _read_file(table, cols, root, name, errors, parsed)
    kept = {id(r) for r in drop_duplicate_ids([r for r, _ in parsed], errors)}
    parsed = [(r, raw) for r, raw in parsed if id(r) in kept]
    apply_harmonisation("chexpert", [r for r, _ in parsed], [raw for _, raw in parsed], labels or [], uncertain,
                        blank_value)
    records = keep_views("chexpert", [r for r, _ in parsed], keep)
    label_names = {"findings": list(labels or [])}
    return make_manifest("chexpert", root, records, label_names, SPLITS.get(split or ""), errors, {"findings"})
