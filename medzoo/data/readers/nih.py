"""NIH ChestX-ray14: ``Data_Entry_2017_v2020.csv`` (or the original ``Data_Entry_2017.csv``), the official split
lists and ``BBox_List_2017.csv``.

Quirks handled:

- the bracketed header names ``OriginalImage[Width,Height]`` and ``OriginalImagePixelSpacing[x,y]`` hold commas,
  so every row has 11 fields; the original 2017 file ends each row with a trailing comma (an empty 12th field);
- ``Patient Gender`` is spelled ``Patient Sex`` in some copies;
- findings are ``|``-separated, ``No Finding`` stands alone, and ``Pleural_Thickening`` keeps its underscore;
- ``BBox_List_2017.csv`` spells Infiltration ``Infiltrate``; its boxes are ``(x, y, w, h)`` in 1024-px space;
- images live in ``images/`` or, as unpacked from the Kaggle/Box archives, in ``images_001/images/`` ... .

Records: ``labels["findings"]`` is a float vector over :data:`NIH_LABELS` (0/1, no unknowns).
``meta``: ``no_finding`` (1.0 for ``No Finding``, else 0.0; :func:`~medzoo.data.labels.relabel` fills the
vocabulary's ``No Finding`` from it), ``view``, ``age``, ``sex``, ``follow_up``, ``original_size`` (w, h),
``pixel_spacing`` (x, y), ``boxes`` (list of ``{"label", "box": (x, y, w, h)}``, only on boxed images),
``official_split`` (``"train_val"`` or ``"test"`` when the lists are present) and ``source``.

Example:
    >>> m = open_dataset("nih-cxr14", "/data/ChestX-ray14", split="test")  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import logging
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
    read_lines,
    row_dict,
    select_split,
)
from medzoo.data.readers._registry import DATASETS

__all__ = ["NIH_LABELS", "read_nih"]

log = logging.getLogger(__name__)

#: The 14 findings in Wang et al.'s order, spelled as in Data_Entry.
NIH_LABELS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
NO_FINDING = "No Finding"
ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
# Canonical 11 column names; the last four are the pieces of the two bracketed headers.
ENTRY_COLUMNS = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position",
    "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
]
BOX_SPELLING = {"Infiltrate": "Infiltration"}
SPLITS = {"train_val": "train_val", "trainval": "train_val", "train": "train_val", "test": "test"}


def _entry_header(table: CsvTable) -> list[str]:
    header = [h for h in table.header]
    while header and header[-1] == "":
        header.pop()  # trailing comma of the original 2017 file
    header = ["Patient Gender" if h == "Patient Sex" else h for h in header]
    if header != ENTRY_COLUMNS:
        raise DatasetFormatError(
            table.path, f"unexpected Data_Entry header {table.header}; expected {','.join(ENTRY_COLUMNS)} "
            "(with 'Patient Gender' or 'Patient Sex', optionally a trailing comma)", table.header_line,
        )
    return header


def _findings(text: str, path: Path, line: int) -> np.ndarray:
    names = [t.strip() for t in text.split("|")]
    vec = np.zeros(len(NIH_LABELS), dtype=np.float32)
    if names == [NO_FINDING]:
        return vec
    for name in names:
        if name == NO_FINDING:
            raise DatasetFormatError(path, f"'No Finding' combined with findings in {text!r}", line)
        if name not in NIH_LABELS:
            raise DatasetFormatError(path, f"unknown finding {name!r}; expected one of {NIH_LABELS} or 'No Finding'",
                                     line)
        vec[NIH_LABELS.index(name)] = 1.0
    return vec


def _image_folders(root: Path, image_dir: str | None) -> list[str]:
    if image_dir is not None:
        return [str(root / image_dir)]
    return [str(root / "images"), *sorted(glob.glob(str(root / "images_*" / "images"))), str(root)]


def _entry_record(table: CsvTable, header: list[str], line: int, fields: list[str], folders: list[str],
                  index: DirIndex) -> Record:
    row = row_dict(table, line, fields, header=header)
    name = row["Image Index"].strip()
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise DatasetFormatError(table.path, f"bad image name {name!r}; expected a file name like 00000001_000.png",
                                 line)
    vec = _findings(row["Finding Labels"], table.path, line)
    image = index.find(name, folders)
    if image is None:
        raise DatasetFormatError(table.path, f"image not found: {name} (looked in {', '.join(folders)})", line)
    patient = row["Patient ID"].strip()
    if not patient:
        raise DatasetFormatError(table.path, "empty 'Patient ID'", line)
    meta = {
        "source": (str(table.path), line), "no_finding": float(not vec.any()), "view": row["View Position"].strip(),
        "sex": row["Patient Gender"].strip(),
        "age": parse_float(row["Patient Age"].rstrip("Y"), table.path, line, "Patient Age"),
        "follow_up": row["Follow-up #"].strip(),
        "original_size": (parse_float(row["OriginalImage[Width"], table.path, line, "OriginalImage[Width"),
                          parse_float(row["Height]"], table.path, line, "Height]")),
        "pixel_spacing": (parse_float(row["OriginalImagePixelSpacing[x"], table.path, line, "PixelSpacing[x"),
                          parse_float(row["y]"], table.path, line, "PixelSpacing y]")),
    }
    return Record(id=name, patient_id=patient.lstrip("0") or "0", image=image, labels={"findings": vec}, meta=meta)


def _read_boxes(path: Path, by_name: dict[str, Record], listed: set[str], errors: ErrorCollector) -> int:
    table = read_csv(path, errors)
    if [h.strip() for h in table.header[:2]] != ["Image Index", "Finding Label"]:
        raise DatasetFormatError(path, f"unexpected header {table.header}; expected 'Image Index,Finding Label,"
                                 "Bbox [x,y,w,h]'", table.header_line)
    header = ["Image Index", "Finding Label", "x", "y", "w", "h"]
    count = 0
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields, header=header)
            label = BOX_SPELLING.get(row["Finding Label"].strip(), row["Finding Label"].strip())
            if label not in NIH_LABELS:
                raise DatasetFormatError(path, f"unknown box label {row['Finding Label']!r}; expected one of "
                                         f"{NIH_LABELS} (or 'Infiltrate')", line)
            box = tuple(parse_float(row[k], path, line, k) for k in ("x", "y", "w", "h"))
            if any(np.isnan(v) for v in box) or box[2] <= 0 or box[3] <= 0:
                raise DatasetFormatError(path, f"bad box {box}; expected x, y and positive w, h", line)
            name = row["Image Index"].strip()
            if name not in listed:
                raise DatasetFormatError(path, f"box for {name!r}, which is not in Data_Entry", line)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        if name in by_name:  # else its Data_Entry row was skipped
            by_name[name].meta.setdefault("boxes", []).append({"label": label, "box": box, "source": (str(path), line)})
            count += 1
    return count


def _official_lists(root: Path, errors: ErrorCollector) -> dict[str, str]:
    out: dict[str, str] = {}
    for split, fname in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
        path = root / fname
        if not path.exists():
            continue
        for line, text in read_lines(path, errors):
            name = text.strip()
            if not name:
                continue
            if name in out and out[name] != split:
                errors.handle(DatasetFormatError(path, f"{name!r} is also in the {out[name]} list", line))
                continue
            out[name] = split
    return out


@DATASETS.register("nih-cxr14")
def read_nih(root: Path, *, split: str | None, errors: ErrorCollector, entry_file: str | None = None,
             image_dir: str | None = None, boxes: bool = True) -> Manifest:
    """Read NIH ChestX-ray14 from ``root`` (the folder that holds the Data_Entry CSV).

    Args:
        root: dataset folder.
        split: ``"train_val"`` (alias ``"train"``) or ``"test"`` from the official lists, or None for all.
        errors: the error policy.
        entry_file: Data_Entry file name; default the v2020 file, else the original.
        image_dir: image folder relative to ``root``; default ``images/``, then ``images_*/images/``, then root.
        boxes: read ``BBox_List_2017.csv`` when present.
    """
    names = [entry_file] if entry_file else list(ENTRY_FILES)
    path = next((root / n for n in names if (root / n).exists()), root / names[0])
    table = read_csv(path, errors)
    header = _entry_header(table)
    folders, index = _image_folders(root, image_dir), DirIndex()
    records, listed = [], set()
    for line, fields in table.rows:
        if fields:
            listed.add(fields[0].strip())
        try:
            records.append(_entry_record(table, header, line, fields, folders, index))
        except DatasetFormatError as e:
            errors.handle(e)
    records = drop_duplicate_ids(records, errors)
    by_name = {r.id: r for r in records}
    official = _official_lists(root, errors)
    for rec in records:
        if rec.id in official:
            rec.meta["official_split"] = official[rec.id]
    if official and split is None:
        missing = sum(1 for r in records if "official_split" not in r.meta)
        if missing:
            log.warning("nih-cxr14: %d image(s) are in neither train_val_list.txt nor test_list.txt", missing)
    if split is not None and not official:
        raise DatasetFormatError(root / "test_list.txt", f"split {split!r} asked for, but the official lists "
                                 "train_val_list.txt / test_list.txt are missing")
    box_path = root / "BBox_List_2017.csv"
    if boxes and box_path.exists():
        log.info("nih-cxr14: %d box(es) from %s", _read_boxes(box_path, by_name, listed, errors), box_path)
    records, name = select_split("nih-cxr14", records, split, SPLITS)
    return make_manifest("nih-cxr14", root, records, {"findings": list(NIH_LABELS)}, name, errors, {"findings"})

