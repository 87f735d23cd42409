"""Volume datasets for CT segmentation: MSD ``dataset.json``, MedicalNet list files and plain NIfTI folders.

Records hold the image path and, when labelled, the segmentation path in ``meta["mask"]``; ``labels`` is empty
and ``label_names["segmentation"]`` names the mask classes when the dataset says them (MSD ``labels``).

- **msd**: ``root/dataset.json``. ``training`` is a list of ``{"image", "label"}``; ``test`` a list of path strings
  (or ``{"image"}``). Paths are relative to the JSON's folder. ``meta["source"]`` is (dataset.json, the line
  where the entry's image path appears). Splits: ``"training"`` (alias ``"train"``) and ``"test"``.
- **medicalnet-list**: ``root`` is the list file; lines are ``<image> <label>`` (one space) or ``<image>`` for test
  lists, relative to ``data_root`` (default: the list file's folder).
- **nifti-folder**: ``root/images/`` with optional ``root/labels/`` matched by file name (also ``imagesTr`` /
  ``labelsTr``), or a CSV manifest (``root`` is the CSV, or ``root/manifest.csv``) with columns ``image``,
  optional ``label`` and ``patient_id``. macOS ``._*`` files are ignored. When a labels folder exists, every
  image needs its label and every label its image.

Example:
    >>> m = open_dataset("msd", "/data/Task06_Lung", split="training")  # doctest: +SKIP
    >>> m[0].meta["mask"]  # doctest: +SKIP
    '/data/Task06_Lung/labelsTr/lung_001.nii.gz'
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import (
    drop_duplicate_ids,
    make_manifest,
    read_csv,
    read_lines,
    read_listing_lines,
    require_file,
    resolve_path,
    row_dict,
)
from medzoo.data.readers._registry import DATASETS

__all__ = ["read_msd", "read_medicalnet_list", "read_nifti_folder", "volume_id"]

log = logging.getLogger(__name__)

NIFTI = (".nii.gz", ".nii")


def volume_id(path: str) -> str:
    """File name without ``.nii.gz`` / ``.nii`` (or its last extension)."""
    name = os.path.basename(path)
    for ext in NIFTI:
        if name.endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def _volume_record(base: Path, image: str, label: str | None, listing: Path, line: int | None,
                   split: str | None = None, allow_absolute: bool = False) -> Record:
    img = require_file(resolve_path(base, image, listing, line, allow_absolute=allow_absolute), listing, line)
    meta: dict[str, Any] = {"source": (str(listing), line)}
    if label:
        meta["mask"] = require_file(resolve_path(base, label, listing, line, allow_absolute=allow_absolute), listing,
                                    line, "label")
    if split:
        meta["official_split"] = split
    vid = volume_id(img)
    return Record(id=vid, patient_id=vid, image=img, meta=meta)


def _json_line(lines: list[str], needle: str, occurrence: int) -> int | None:
    """Line of the ``occurrence``-th (0-based) appearance of the JSON string ``needle``."""
    quoted = json.dumps(needle)
    hits = (i for i, text in enumerate(lines, 1) if quoted in text)
    return next((i for k, i in enumerate(hits) if k == occurrence), None)


def _msd_entries(data: dict, path: Path) -> list[tuple[str, str, str | None]]:
    out = []
    for section, split in (("training", "training"), ("test", "test")):
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise DatasetFormatError(path, f"key {section!r}: expected a list")
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                raise DatasetFormatError(path, f"{section}[{i}]: expected a path or {{'image': ..., 'label': ...}}")
            if section == "training" and not isinstance(entry.get("label"), str):
                raise DatasetFormatError(path, f"training[{i}]: missing 'label' path")
            out.append((split, entry["image"], entry.get("label")))
    return out


@DATASETS.register("msd")
def read_msd(root: Path, *, split: str | None, errors: ErrorCollector) -> Manifest:
    """Read a Medical Segmentation Decathlon task folder (``root/dataset.json``).

    Args:
        root: the task folder, e.g. ``Task06_Lung``.
        split: ``"training"`` (alias ``"train"``), ``"test"`` or None for both.
        errors: the error policy.
    """
    splits = {"training": "training", "train": "training", "test": "test"}
    if split is not None and split not in splits:
        raise ValueError(f"msd: unknown split {split!r}; expected one of {sorted(splits)} or None")
    path = root / "dataset.json"
    lines = [t for _, t in read_lines(path, errors)]
    try:
        data = json.loads("\n".join(lines))
    except json.JSONDecodeError as e:
        raise DatasetFormatError(path, f"invalid JSON ({e.msg})", e.lineno) from None
    except RecursionError:
        raise DatasetFormatError(path, "invalid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "expected a JSON object with 'training' and 'test' keys")
    records, seen = [], Counter()
    for name, image, label in _msd_entries(data, path):
        seen[image] += 1
        if split is not None and splits[split] != name:
            continue
        try:
            records.append(_volume_record(root, image, label, path, _json_line(lines, image, seen[image] - 1), name))
        except DatasetFormatError as e:
            errors.handle(e)
    n_train = data.get("numTraining")
    if isinstance(n_train, int) and n_train != len(data.get("training", [])):
        log.warning("msd: numTraining is %d but 'training' lists %d cases", n_train, len(data.get("training", [])))
    labels = data.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise DatasetFormatError(path, f"key 'labels': expected an object like {{\"0\": \"background\"}}, got "
                                 f"{json.dumps(labels)[:80]}")
    names = [labels[k] for k in sorted(labels, key=lambda k: int(k) if str(k).isdigit() else 0)] if labels else []
    label_names = {"segmentation": names} if names else {}
    records = drop_duplicate_ids(records, errors)
    return make_manifest("msd", root, records, label_names, splits.get(split or ""), errors)


@DATASETS.register("medicalnet-list")
def read_medicalnet_list(root: Path, *, split: str | None, errors: ErrorCollector,
                         data_root: str | None = None) -> Manifest:
    """Read a MedicalNet list file (``root`` is the file).

    Args:
        root: the list file, e.g. ``data/train.txt``.
        split: recorded as the manifest's split name (the list file is the split).
        errors: the error policy.
        data_root: folder the listed paths are relative to (default: the list file's folder).
    """
    base = Path(data_root) if data_root else root.parent
    records = []
    for line, text in read_listing_lines(root, errors, "<image> <label>"):
        fields = text.strip().split(" ")
        try:
            if len(fields) > 2 or "" in fields:
                raise DatasetFormatError(root, f"expected '<image> <label>' or '<image>' separated by one space, "
                                         f"got {len(fields)} fields", line)
            records.append(_volume_record(base, fields[0], fields[1] if len(fields) == 2 else None, root, line))
        except DatasetFormatError as e:
            errors.handle(e)
    records = drop_duplicate_ids(records, errors)
    return make_manifest("medicalnet-list", root, records, {}, split, errors)


def _nifti_files(folder: Path, errors: ErrorCollector) -> dict[str, str]:
    """volume id -> file name for the NIfTI files of ``folder``; hidden files are ignored, others are logged."""
    out: dict[str, str] = {}
    other = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("."):
            continue
        if not name.endswith(NIFTI):
            other.append(name)
            continue
        vid = volume_id(name)
        if vid in out:
            errors.handle(DatasetFormatError(folder / name, f"two volumes named {vid!r} ({out[vid]} and {name})"))
            continue
        out[vid] = name
    if other:
        log.warning("nifti-folder: ignoring %d non-NIfTI file(s) in %s, e.g. %s", len(other), folder, other[0])
    return out


def _from_folders(root: Path, errors: ErrorCollector) -> list[Record]:
    img_dir = next((root / d for d in ("images", "imagesTr") if (root / d).is_dir()), None)
    if img_dir is None:
        raise DatasetFormatError(root, "no images/ (or imagesTr/) folder and no manifest.csv")
    lab_dir = next((root / d for d in ("labels", "labelsTr") if (root / d).is_dir()), None)
    images = _nifti_files(img_dir, errors)
    labels = _nifti_files(lab_dir, errors) if lab_dir else {}
    for vid in sorted(set(labels) - set(images)):
        errors.handle(DatasetFormatError(lab_dir / labels[vid], f"label without an image {vid!r} in {img_dir}"))
    records = []
    for vid, name in images.items():
        if lab_dir is not None and vid not in labels:
            errors.handle(DatasetFormatError(img_dir / name, f"no label for this image in {lab_dir}"))
            continue
        meta: dict[str, Any] = {"source": (os.path.abspath(img_dir / name), None)}
        if lab_dir is not None:
            meta["mask"] = os.path.abspath(lab_dir / labels[vid])
        records.append(Record(id=vid, patient_id=vid, image=os.path.abspath(img_dir / name), meta=meta))
    return records


def _from_csv(path: Path, errors: ErrorCollector) -> list[Record]:
    table = read_csv(path, errors)
    table.column("image")
    records = []
    for line, fields in table.rows:
        try:
            row = row_dict(table, line, fields)
            rec = _volume_record(path.parent, row["image"], row.get("label", "").strip() or None, path, line,
                                 allow_absolute=True)
        except DatasetFormatError as e:
            errors.handle(e)
            continue
        if row.get("patient_id", "").strip():
            rec.patient_id = row["patient_id"].strip()
        records.append(rec)
    return records


@DATASETS.register("nifti-folder")
def read_nifti_folder(root: Path, *, split: str | None, errors: ErrorCollector) -> Manifest:
    """Read NIfTI volumes from ``images/`` + ``labels/`` folders or a CSV manifest.

    Args:
        root: the folder (or the CSV file).
        split: recorded as the manifest's split name.
        errors: the error policy.
    """
    if root.is_file():
        records = _from_csv(root, errors)
    elif (root / "manifest.csv").exists():
        records = _from_csv(root / "manifest.csv", errors)
    else:
        records = _from_folders(root, errors)
    records = drop_duplicate_ids(records, errors)
    return make_manifest("nifti-folder", root, records, {}, split, errors)
