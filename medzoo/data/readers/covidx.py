"""COVIDx CXR (COVID-Net) and COVIDx CT (COVIDNet-CT) label files.

**covidx-cxr**: space-separated lines without a header, ``patientid filename class`` (COVIDx <= v6) or
``patientid filename class source`` (v7+); files may mix both. Patient ids can contain spaces, so lines are
parsed from the right. Three-class files (``normal`` / ``pneumonia`` / ``COVID-19``) give the task ``covid``
(an int over :data:`COVID_CLASSES`); binary files (``negative`` / ``positive``, COVIDx8B+) give their own task
``covid_binary``, because the two label sets are different tasks (a negative is not "normal"). Images are
looked up in ``root/<split>/``, ``root/data/<split>/``, ``root/images/`` then ``root``. ``meta["origin"]`` is
the source column (rsna, cohen, ...).

**covidx-ct**: lines ``filename class xmin ymin xmax ymax`` (class 0 Normal, 1 Pneumonia, 2 COVID-19; the box is
a body crop in pixels, x = column). The scan id is the file name without its trailing slice index
(``NCP_341_1834_0022.png`` -> scan ``NCP_341_1834``, slice 22; ``STOIC-7-0012.png`` -> ``STOIC-7``;
``COVIDCTMD-P041-IM0041.png`` -> ``COVIDCTMD-P041``). The patient id merges the scans of one patient:
``{class}_{patient}`` for CNCB names (``NCP_341_1834`` -> ``NCP_341``), ``COVID-CTset_patientN`` for COVID-CTset
series (``137covid_patient9_SR_3`` and ``..._SR_4`` -> ``COVID-CTset_patient9``), ``volume-covid19-A-NNNN`` for the
TCIA series (``volume-covid19-A-0028_1`` -> ``volume-covid19-A-0028``), and the scan id otherwise; so a random
patient split never puts two series of one patient on both sides. With ``level="slice"`` (default) each line is a
record with ``meta["bbox"] = (xmin, ymin, xmax, ymax)``; with ``level="series"`` each scan is one record whose
``image`` lists the slice paths ordered by slice index, with ``meta["bboxes"]`` and ``meta["slice_index"]`` in
the same order. A scan's label is the highest slice class (CNCB keeps only lesion slices of CP/NCP scans), and
``meta["slice_labels"]`` keeps the per-slice classes. Images are in ``image_dir``, else ``root/*_images/``,
``root/images/`` or ``root``.

Split files are found in ``root``, ``root/labels`` and ``root/splits/**`` by name (``train*.txt``,
``val*.txt``, ``test*.txt``); ``version`` picks among several (for example ``"9A"`` or ``"CT-3A"``), and
``files={"train": "train.txt", ...}`` names them explicitly.

Example:
    >>> m = open_dataset("covidx-ct", "/data/covidx-ct", level="series", version="CT-3A")  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path

from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record
from medzoo.data.readers._common import DirIndex, drop_duplicate_ids, make_manifest, read_listing_lines
from medzoo.data.readers._registry import DATASETS

__all__ = ["COVID_CLASSES", "BINARY_CLASSES", "scan_of", "patient_of", "read_covidx_cxr", "read_covidx_ct"]

log = logging.getLogger(__name__)

COVID_CLASSES = ["Normal", "Pneumonia", "COVID-19"]
BINARY_CLASSES = ["negative", "positive"]
_CXR_CLASSES = {"normal": ("covid", 0), "pneumonia": ("covid", 1), "covid-19": ("covid", 2),
                "negative": ("covid_binary", 0), "positive": ("covid_binary", 1)}
_SLICE = re.compile(r"^(?P<scan>.+)[-_][A-Za-z]*(?P<index>\d+)$")
_CNCB = re.compile(r"^(?P<cls>CP|NCP|Normal)_(?P<patient>\d+)_\d+$")
_COVID_CTSET = re.compile(r"^[A-Za-z0-9]*_(?P<patient>patient\d+)_SR_\d+$", re.IGNORECASE)
_TCIA = re.compile(r"^(?P<patient>volume-covid19-A-\d+)(?:_\d+)?(?:_ct)?$")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _split_files(root: Path, files: dict[str, str] | None, version: str | None, kind: str) -> dict[str, Path]:
    if files is not None:
        unknown = set(files) - set(SPLIT_NAMES)
        if unknown:
            raise ValueError(f"{kind}: files keys must be among {SPLIT_NAMES}, got {sorted(unknown)}")
        return {s: root / f for s, f in files.items()}
    folders = [root, root / "labels", *sorted(Path(p) for p in glob.glob(str(root / "splits" / "**"), recursive=True))]
    out = {}
    for split in SPLIT_NAMES:
        found = sorted({p for d in folders if d.is_dir() for p in d.glob(f"{split}*.txt")})
        picked = [p for p in found if version and version in p.name] or found
        if len(picked) > 1:
            raise DatasetFormatError(root, f"several {split} label files {[p.name for p in picked]}; pass "
                                     "version=... or files={...}")
        if picked:
            out[split] = picked[0]
    if not out:
        raise DatasetFormatError(root, "no label files found (looked for train*.txt, val*.txt, test*.txt in root, "
                                 "labels/ and splits/)")
    return out


def _wanted(files: dict[str, Path], split: str | None, kind: str) -> list[str]:
    if split is None:
        return list(files)
    if split not in SPLIT_ALIASES or SPLIT_ALIASES[split] not in files:
        raise ValueError(f"{kind}: unknown split {split!r}; this copy has {sorted(files)}")
    return [SPLIT_ALIASES[split]]


def _parse_cxr_line(text: str, path: Path, line: int) -> tuple[str, str, str, int, str | None]:
    """-> (patient id, file name, task, class index, source)."""
    tokens = text.split()
    if len(tokens) < 3:
        raise DatasetFormatError(path, f"expected 'patientid filename class [source]', got {text!r}", line)
    if tokens[-1].lower() in _CXR_CLASSES:
        pid, name, cls, source = " ".join(tokens[:-2]), tokens[-2], tokens[-1], None
    elif len(tokens) >= 4 and tokens[-2].lower() in _CXR_CLASSES:
        pid, name, cls, source = " ".join(tokens[:-3]), tokens[-3], tokens[-2], tokens[-1]
    else:
        raise DatasetFormatError(path, f"unknown label in {text!r}; expected class normal, pneumonia, COVID-19, "
                                 "negative or positive as the last or second-to-last field", line)
    task, index = _CXR_CLASSES[cls.lower()]
    return pid, name, task, index, source


def _find_image(name: str, folders: list[Path], index: DirIndex, path: Path, line: int) -> str:
    if "/" in name or "\\" in name or name in (".", ".."):
        raise DatasetFormatError(path, f"bad image file name {name!r}; expected a bare file name", line)
    found = index.find(name, list(folders))
    if found is None:
        raise DatasetFormatError(path, f"image not found: {name} (looked in {', '.join(map(str, folders))})", line)
    return found


@DATASETS.register("covidx-cxr")
def read_covidx_cxr(root: Path, *, split: str | None, errors: ErrorCollector, version: str | None = None,
                    files: dict[str, str] | None = None) -> Manifest:
    """Read COVIDx CXR label files and images under ``root``.

    Args:
        root: dataset folder.
        split: ``"train"``, ``"val"``, ``"test"`` (as present) or None for all.
        errors: the error policy.
        version: substring that picks among several label files (for example ``"9A"``).
        files: split -> label file relative to ``root``.
    """
    split_files = _split_files(root, files, version, "covidx-cxr")
    index, records, tasks = DirIndex(), [], set()
    for name in _wanted(split_files, split, "covidx-cxr"):
        path = split_files[name]
        folders = [root / name, root / "data" / name, root / "images", root]
        for line, text in read_listing_lines(path, errors, "patientid filename class [source]"):
            try:
                pid, fname, task, cls, source = _parse_cxr_line(text, path, line)
                if not pid:
                    raise DatasetFormatError(path, f"empty patient id in {text!r}", line)
                image = _find_image(fname, folders, index, path, line)
            except DatasetFormatError as e:
                errors.handle(e)
                continue
            tasks.add(task)
            meta = {"source": (str(path), line), "official_split": name, "origin": source}
            records.append(Record(id=fname, patient_id=pid, image=image, labels={task: cls}, meta=meta))
    label_names = {t: list(COVID_CLASSES if t == "covid" else BINARY_CLASSES) for t in ("covid", "covid_binary")
                   if t in tasks}
    records = drop_duplicate_ids(records, errors)
    return make_manifest("covidx-cxr", root, records, label_names, SPLIT_ALIASES.get(split or ""), errors)


def patient_of(scan: str) -> str:
    """The patient id of a COVIDx-CT scan id (scans of one patient share it; see the module docstring).

    Example:
        >>> patient_of("137covid_patient9_SR_3"), patient_of("volume-covid19-A-0028_1"), patient_of("STOIC-7")
        ('COVID-CTset_patient9', 'volume-covid19-A-0028', 'STOIC-7')
    """
    if cncb := _CNCB.match(scan):
        return f"{cncb.group('cls')}_{cncb.group('patient')}"
    if ctset := _COVID_CTSET.match(scan):
        return f"COVID-CTset_{ctset.group('patient').lower()}"
    if tcia := _TCIA.match(scan):
        return tcia.group("patient")
    return scan


def scan_of(file_name: str) -> tuple[str, str, int] | None:
    """(scan id, patient id, slice index) from a COVIDx-CT slice file name, or None when it has no slice index.

    Example:
        >>> scan_of("NCP_341_1834_0022.png")
        ('NCP_341_1834', 'NCP_341', 22)
    """
    stem = file_name.rsplit(".", 1)[0]
    match = _SLICE.match(stem)
    if match is None:
        return None
    scan = match.group("scan")
    return scan, patient_of(scan), int(match.group("index"))


def _parse_ct_line(text: str, path: Path, line: int) -> tuple[str, int, tuple[int, int, int, int]]:
    tokens = text.split()
    if len(tokens) != 6:
        raise DatasetFormatError(path, f"expected 6 fields 'filename class xmin ymin xmax ymax', got {len(tokens)}",
                                 line)
    try:
        cls, *box = (int(t) for t in tokens[1:])
    except ValueError:
        raise DatasetFormatError(path, f"class and box must be integers, got {tokens[1:]}", line) from None
    if cls not in (0, 1, 2):
        raise DatasetFormatError(path, f"unknown label {cls}; expected 0 (Normal), 1 (Pneumonia) or 2 (COVID-19)",
                                 line)
    if min(box) < 0 or box[0] >= box[2] or box[1] >= box[3]:
        raise DatasetFormatError(path, f"bad crop box {box}; expected 0 <= xmin < xmax and 0 <= ymin < ymax", line)
    return tokens[0], cls, tuple(box)  # type: ignore[return-value]


def _ct_slices(root: Path, split_files: dict[str, Path], wanted: list[str], image_dir: str | None,
               errors: ErrorCollector) -> list[Record]:
    folders = [root / image_dir] if image_dir else [*sorted(Path(p) for p in glob.glob(str(root / "*_images"))),
                                                   root / "images", root]
    index, records = DirIndex(), []
    for name in wanted:
        path = split_files[name]
        for line, text in read_listing_lines(path, errors, "filename class xmin ymin xmax ymax"):
            try:
                fname, cls, box = _parse_ct_line(text, path, line)
                parsed = scan_of(fname)
                if parsed is None:
                    raise DatasetFormatError(path, f"no slice index at the end of {fname!r}; expected names like "
                                             "NCP_341_1834_0022.png or STOIC-7-0012.png", line)
                image = _find_image(fname, folders, index, path, line)
            except DatasetFormatError as e:
                errors.handle(e)
                continue
            scan, patient, slice_index = parsed
            meta = {"source": (str(path), line), "official_split": name, "bbox": box, "scan": scan,
                    "slice_index": slice_index}
            records.append(Record(id=fname, patient_id=patient, image=image, labels={"covid": cls}, meta=meta))
    return drop_duplicate_ids(records, errors)


def _ct_series(slices: list[Record], errors: ErrorCollector) -> list[Record]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for rec in slices:
        groups.setdefault((rec.meta["official_split"], rec.meta["scan"]), []).append(rec)
    out = []
    for (split, scan), members in groups.items():
        members.sort(key=lambda r: r.meta["slice_index"])
        indices = [r.meta["slice_index"] for r in members]
        dup = next((r for a, r in zip(indices, members[1:]) if a == r.meta["slice_index"]), None)
        if dup is not None:
            src = dup.meta["source"]
            errors.handle(DatasetFormatError(src[0], f"scan {scan!r} has slice index {dup.meta['slice_index']} "
                                             "twice", src[1]))
            continue
        classes = [r.labels["covid"] for r in members]
        meta = {"source": min(r.meta["source"] for r in members),
                "official_split": split, "bboxes": [r.meta["bbox"] for r in members], "slice_index": indices,
                "slice_labels": classes, "slice_sources": [r.meta["source"] for r in members]}
        out.append(Record(id=scan, patient_id=members[0].patient_id, image=[r.image for r in members],
                          labels={"covid": max(classes)}, meta=meta))
    return drop_duplicate_ids(out, errors)


@DATASETS.register("covidx-ct")
def read_covidx_ct(root: Path, *, split: str | None, errors: ErrorCollector, level: str = "slice",
                   version: str | None = None, files: dict[str, str] | None = None,
                   image_dir: str | None = None) -> Manifest:
    """Read COVIDx CT split files and slice images under ``root``.

    Args:
        root: dataset folder.
        split: ``"train"``, ``"val"``, ``"test"`` or None for all.
        errors: the error policy.
        level: ``"slice"`` (one record per slice) or ``"series"`` (one record per scan).
        version: substring that picks among several split files (for example ``"CT-3A"``).
        files: split -> split file relative to ``root``.
        image_dir: slice image folder relative to ``root``.
    """
    if level not in ("slice", "series"):
        raise ValueError(f"covidx-ct: level must be 'slice' or 'series', got {level!r}")
    split_files = _split_files(root, files, version, "covidx-ct")
    records = _ct_slices(root, split_files, _wanted(split_files, split, "covidx-ct"), image_dir, errors)
    if level == "series":
        records = _ct_series(records, errors)
    return make_manifest("covidx-ct", root, records, {"covid": list(COVID_CLASSES)}, SPLIT_ALIASES.get(split or ""),
                         errors)
