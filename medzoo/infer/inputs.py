"""What ``medzoo predict`` reads: inputs discovered from paths, and each one loaded on demand.

An input is one of:

- a NIfTI file (``.nii``, ``.nii.gz``): a ``volume``;
- a DICOM series folder: a ``volume`` (needs pydicom). DICOM files are recognised by a ``.dcm``/``.dicom`` name or
  by the ``DICM`` marker, so extension-less exports work. The folder must hold one series of one patient, or
  :class:`~medzoo.data._dicom.DicomOptions` picks the series;
- a DICOM file: an ``image`` when it holds one frame (a CR/DX radiograph), a ``volume`` when it is a multi-frame
  file with per-frame geometry;
- a PNG or JPEG file: an ``image``;
- a folder of PNG/JPEG slices (a COVIDx-CT patient): a ``series``, slices in natural name order;
- a listing (``.csv``, ``.tsv`` or ``.txt``): one input per row. A CSV names its paths in a ``path`` (or
  ``image``, ``filename``) column, else the first column; an optional ``id`` column names the input. Relative
  paths resolve against the listing's folder.

Ids name output files, so :func:`discover_inputs` makes them safe and unique: path separators, ``..`` parts,
control characters and leading dots are removed (``../../x`` -> ``x``, ``/data/P1/P1`` -> ``data_P1_P1``), and a
repeated id gets the first free ``-2``, ``-3``... suffix that no other input's id takes. :func:`shard_items` splits a
listing across processes (``medzoo predict --shard K/N``) after the ids are fixed, so every shard names an input
the same way.

Discovery never decodes images; :func:`load_input` does, one input at a time, so memory stays flat over many
inputs.

Example:
    >>> import numpy as np, tempfile, os
    >>> from medzoo.data.imageio import write_png
    >>> p = str(write_png(os.path.join(tempfile.mkdtemp(), "a.png"), np.zeros((8, 8), np.uint8)))
    >>> items, errors = discover_inputs([p])
    >>> [(i.id, i.kind) for i in items], errors
    ([('a', 'image')], [])
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.data._dicom import DICOM_SUFFIXES, DicomOptions, dicom_file_kind, is_dicom_file
from medzoo.data.budget import read_text_capped
from medzoo.data.imageio import NIFTI_SUFFIXES, RASTER_SUFFIXES, check_series_budget, read_image
from medzoo.data.manifest import DatasetFormatError

__all__ = ["InputItem", "LoadedInput", "DicomOptions", "discover_inputs", "load_input", "classify_path", "file_stem",
           "LISTING_SUFFIXES", "parse_shard", "safe_id", "shard_items"]

log = logging.getLogger(__name__)

LISTING_SUFFIXES = (".csv", ".tsv", ".txt")
#: An id's UTF-8 length, so that ``{id}_{task}.nii.gz`` fits the usual 255-byte file-name limit.
MAX_ID_BYTES = 160
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_PATH_COLUMNS = ("path", "image", "filename", "file")


@dataclass(frozen=True)
class InputItem:
    """One input to predict on (not yet read).

    Attributes:
        id: a name for outputs (file stem, folder name, or the listing's ``id`` column).
        path: the file or folder.
        kind: ``volume``, ``image`` or ``series``.
        source: where it was named (``listing.csv:3`` or the command line path).
        dicom: how a DICOM folder or file is read (series choice, uneven slices); None for the defaults.
    """

    id: str
    path: str
    kind: str
    source: str = ""
    dicom: DicomOptions | None = None


@dataclass
class LoadedInput:
    """A read input: channel-first array (``[C, X, Y, Z]``, ``[C, H, W]`` or ``[N, C, H, W]``) and reader meta."""

    item: InputItem
    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def file_stem(p: Path) -> str:
    """The file name without its image suffix (only known suffixes: ``1.2.840.113`` keeps its dots)."""
    name = p.name
    for suf in (*NIFTI_SUFFIXES, *RASTER_SUFFIXES, *DICOM_SUFFIXES):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _folder_kind(p: Path) -> str:
    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    rasters = [f for f in files if f.name.lower().endswith(RASTER_SUFFIXES)]
    if any(is_dicom_file(f) for f in files if f not in rasters):
        return "volume"
    if rasters:
        return "series"
    raise DatasetFormatError(p, f"folder holds neither DICOM files ({', '.join(DICOM_SUFFIXES)} names or the DICM "
                                f"marker) nor PNG/JPEG slices")


def classify_path(path: str | Path, source: str = "", name: str | None = None,
                  dicom: DicomOptions | None = None) -> InputItem:
    """The :class:`InputItem` for one file or folder (a DICOM file's header is read to tell image from volume).

    Raises:
        DatasetFormatError: missing path or unsupported type, naming it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetFormatError(p, "input not found")
    lower = p.name.lower()
    if p.is_dir():
        kind = _folder_kind(p)
    elif lower.endswith(NIFTI_SUFFIXES):
        kind = "volume"
    elif lower.endswith(RASTER_SUFFIXES):
        kind = "image"
    elif is_dicom_file(p):
        kind = dicom_file_kind(p)
    else:
        raise DatasetFormatError(p, f"unsupported input; expected NIfTI {NIFTI_SUFFIXES}, PNG/JPEG "
                                    f"{RASTER_SUFFIXES}, a DICOM file, a DICOM or slice folder, or a listing "
                                    f"{LISTING_SUFFIXES}")
    return InputItem(id=name or file_stem(p), path=str(p), kind=kind, source=source or str(p),
                     dicom=dicom if kind == "volume" else None)


def _read_listing(path: Path) -> list[tuple[str, str | None, int]]:
    """``(path, id, line)`` per row of a listing file."""
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would otherwise stick to the first header.
    text = read_text_capped(path).decode("utf-8-sig")
    if path.suffix.lower() == ".txt":
        return [(ln.strip(), None, i) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    rows = list(csv.reader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if not rows:
        raise DatasetFormatError(path, "empty listing")
    header = [h.strip().lower() for h in rows[0]]
    col = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
    id_col = header.index("id") if "id" in header else None
    start = 1 if col is not None or id_col is not None else 0
    col = 0 if col is None else col
    out = []
    for line, row in enumerate(rows[start:], start + 1):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(col, id_col or 0):
            raise DatasetFormatError(path, f"short row {row}; expected a path in column {col + 1}", line)
        out.append((row[col].strip(), row[id_col].strip() if id_col is not None else None, line))
    return out


def discover_inputs(paths: Iterable[str | Path],
                    dicom: DicomOptions | None = None) -> tuple[list[InputItem], list[tuple[str, str]]]:
    """Expand command-line paths (files, folders, listings) into inputs.

    Args:
        paths: files, folders and listings.
        dicom: how DICOM volumes are read (series choice, uneven slices); None for the defaults.

    Returns:
        ``(items, errors)``: the inputs found, and ``(where, message)`` for each path that could not be used
        (the rest still run). Ids are safe file names, unique (see the module docstring).
    """
    items: list[InputItem] = []
    errors: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw).expanduser()
        try:
            if p.is_file() and p.name.lower().endswith(LISTING_SUFFIXES):
                for entry, name, line in _read_listing(p):
                    where = f"{p}:{line}"
                    target = Path(entry) if Path(entry).is_absolute() else p.parent / entry
                    try:
                        items.append(classify_path(target, where, name, dicom))
                    except DatasetFormatError as err:
                        errors.append((where, str(err)))
            else:
                items.append(classify_path(p, dicom=dicom))
        except (DatasetFormatError, OSError, UnicodeDecodeError) as err:
            errors.append((str(p), str(err)))
    return _unique_ids(items), errors


def safe_id(raw: str) -> str:
    """``raw`` as one file-name component: no separators, ``.``/``..`` parts, control characters or leading dot.

    Example:
        >>> safe_id("../../x"), safe_id("/data/P1/P1"), safe_id("a\\rb"), safe_id("..")
        ('x', 'data_P1_P1', 'a_b', 'input')
    """
    parts = [q for q in re.split(r"[/\\]+", _UNSAFE.sub("_", raw)) if q not in ("", ".", "..")]
    name = "_".join(parts).lstrip(".") or "input"
    while len(name.encode("utf-8")) > MAX_ID_BYTES:
        name = name[:-1]
    return name


def _unique_ids(items: list[InputItem]) -> list[InputItem]:
    """Safe ids, unique against every other input's id (case-insensitively, for macOS and Windows disks)."""
    safe = [safe_id(it.id) for it in items]
    for it, s in zip(items, safe):
        if s != it.id:
            log.warning("%s: id %r is not a safe file name; outputs are named %r", it.source, it.id, s)
    taken = {s.casefold() for s in safe}
    seen: set[str] = set()
    out = []
    for it, s in zip(items, safe):
        name, n = s, 1
        while name.casefold() in seen or (n > 1 and name.casefold() in taken):
            n += 1
            name = f"{s}-{n}"
        seen.add(name.casefold())
        taken.add(name.casefold())
        out.append(it if name == it.id else replace(it, id=name))
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N`` (shard K of N, counted from 1 as ``split -n l/K/N`` does).

    Raises:
        ValueError: not of that form.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ValueError(f"--shard {text!r}: expected K/N with 1 <= K <= N (for example 1/4)")
    return int(m.group(1)), int(m.group(2))


def shard_items(items: list[InputItem], k: int, n: int) -> list[InputItem]:
    """Shard ``k`` of ``n`` (from 1): every ``n``-th input starting at the ``k``-th, so the shards of one listing
    are disjoint, cover it, and balance runs of large and small inputs."""
    if not 1 <= k <= n:
        raise ValueError(f"shard {k}/{n}: expected 1 <= K <= N")
    return items[k - 1::n]


def load_input(item: InputItem) -> LoadedInput:
    """Read one input's pixels.

    Returns:
        ``volume``: ``[C, X, Y, Z]`` with ``meta["affine"]``; ``image``: ``[C, H, W]`` with ``meta["max_value"]``;
        ``series``: ``[N, C, H, W]`` (slices must share a size) with ``meta["slice_files"]``.

    Raises:
        DatasetFormatError: an unreadable file, naming it.
    """
    if item.kind != "series":
        arr, meta = read_image(item.path, dicom=item.dicom)
        if item.kind == "volume" and arr.ndim != 4:
            raise DatasetFormatError(item.path, f"expected a 3-D volume, got an array of shape {arr.shape[1:]}")
        if item.kind == "volume" and "affine" not in meta:
            meta["affine"] = np.eye(4)
        return LoadedInput(item, arr, meta)
    folder = Path(item.path)
    files = sorted((f for f in folder.iterdir() if f.name.lower().endswith(RASTER_SUFFIXES)),
                   key=lambda f: _natural_key(f.name))
    slices, meta0 = [], {}
    for f in files:
        arr, meta = read_image(f)
        if not meta0:
            check_series_budget(f, len(files), arr.nbytes)
        meta0 = meta0 or meta
        if slices and arr.shape != slices[0].shape:
            raise DatasetFormatError(f, f"slice shape {arr.shape} differs from {slices[0].shape} of {files[0]}")
        slices.append(arr)
    meta = {"format": "slice-series", "max_value": meta0.get("max_value", 255.0),
            "slice_files": [str(f) for f in files], "filename": str(folder)}
    return LoadedInput(item, np.stack(slices), meta)
