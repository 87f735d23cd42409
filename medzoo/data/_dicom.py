"""Reading DICOM (pydicom is an optional dependency: ``pip install medzoo[dicom]``).

- A file is DICOM when its name ends ``.dcm``/``.dicom`` or it carries the ``DICM`` marker at byte 128, so the
  extension-less files of real exports are read too.
- A single-frame file (a CR/DX radiograph) reads as a ``[1, H, W]`` image.
- A folder, or an enhanced multi-frame file with per-frame geometry, reads as a ``[1, X, Y, Z]`` float32 volume
  (X along a row, Y down a column, Z along the slice normal) with a voxel -> RAS+ affine, as nibabel and MONAI
  build it. A folder must hold one series (or the caller picks one by SeriesInstanceUID or SeriesNumber) of one
  patient; slices are sorted by ImagePositionPatient projected on the slice normal, and a duplicate position, a
  missing slice or uneven spacing is refused (or resampled onto a uniform grid with a warning, when asked).
- Pixels are rescaled (RescaleSlope/Intercept, per slice or frame), and MONOCHROME1 is inverted first so that
  bright means dense in every file, as for MONOCHROME2.

Example:
    >>> import numpy as np, tempfile
    >>> from medzoo.data._dicom_write import write_dicom_series
    >>> d = tempfile.mkdtemp()
    >>> _ = write_dicom_series(d, np.zeros((4, 3, 2)), (0.5, 0.5, 2.0))
    >>> vol, meta = read_dicom_series(Path(d))
    >>> vol.shape, meta["spacing"]
    ((1, 4, 3, 2), (0.5, 0.5, 2.0))
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.data._geometry import Plane, UnevenPolicy, stack_planes
from medzoo.data.manifest import DatasetFormatError

__all__ = ["DicomOptions", "DICOM_SUFFIXES", "is_dicom_file", "dicom_files", "dicom_file_kind", "read_dicom",
           "read_dicom_file", "read_dicom_series", "has_pydicom", "require_pydicom"]

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR index, not an image
_CROSS_SECTIONAL = ("CT", "MR", "PT", "NM")
_TAG_ERRORS = (ValueError, TypeError, OverflowError, IndexError, AttributeError, KeyError)


@dataclass(frozen=True)
class DicomOptions:
    """How a DICOM folder becomes one volume.

    Attributes:
        series: the SeriesInstanceUID, or SeriesNumber, to read from a folder that holds several series.
        uneven: ``"error"`` refuses a missing slice or uneven slice spacing; ``"resample"`` interpolates the
            slices onto a uniform grid at the median step, with a warning.
        tolerance: how far (a fraction of the median step) a slice step may stray before it counts as uneven.
    """

    series: str | None = None
    uneven: UnevenPolicy = "error"
    tolerance: float = 0.01


def has_pydicom() -> bool:
    """Whether pydicom is installed (found, not imported)."""
    return importlib.util.find_spec("pydicom") is not None


def require_pydicom(what: str) -> Any:
    """Import pydicom or raise an ImportError that says how to install it."""
    try:
        import pydicom  # optional dependency: medzoo[dicom]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what} needs pydicom, an optional dependency: pip install 'medzoo[dicom]'") from exc
    return pydicom


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file with the ``DICM`` marker at byte 128 (reads 132 bytes)."""
    p = Path(path)
    if p.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files of a folder (hidden files skipped), sorted by name; other files are logged and ignored."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    found = [f for f in files if is_dicom_file(f)]
    others = [f.name for f in files if f not in found]
    if found and others:
        log.warning("%s: ignoring %d non-DICOM file(s): %s", folder, len(others), ", ".join(others[:5]))
    return found


@contextmanager
def _tags_of(path: Path) -> Iterator[None]:
    """Turn a bad tag value (pydicom parses them lazily, on access) into an error naming the file."""
    try:
        yield
    except DatasetFormatError:
        raise
    except _TAG_ERRORS as exc:
        raise DatasetFormatError(path, f"corrupt DICOM tag value ({type(exc).__name__}: {exc})") from exc


def _dcmread(path: Path, header_only: bool = False) -> Any:
    pydicom = require_pydicom(f"reading {path}")
    if path.stat().st_size == 0:
        raise DatasetFormatError(path, "DICOM file is empty (0 bytes)")
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, ValueError...
        raise DatasetFormatError(path, f"cannot read DICOM ({type(exc).__name__}: {exc})") from exc
    if len(ds) == 0:  # pydicom stops quietly at the end of a cut file
        raise DatasetFormatError(path, "DICOM file holds no data elements after its header (truncated?)")
    return ds


def _pixels(ds: Any, path: Path) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as exc:  # missing PixelData, no decoder for the transfer syntax, truncated data...
        raise DatasetFormatError(path, f"cannot read DICOM pixels ({type(exc).__name__}: {exc})") from exc


def _n_frames(ds: Any) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _values(ds: Any, pixels: np.ndarray, path: Path, slope: Any = None, intercept: Any = None) -> np.ndarray:
    """Stored pixels -> float32 values: MONOCHROME1 inverted within the stored range, then the rescale."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DatasetFormatError(path, f"colour DICOM ({photometric}, {samples} samples per pixel) is not "
                                       f"supported; expected a grayscale MONOCHROME1/MONOCHROME2 image")
    if photometric == "MONOCHROME1":  # bright = dense, like MONOCHROME2
        bits = int(ds.get("BitsStored", 16) or 16)
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        pixels = (-1 if signed else 2**bits - 1) - pixels.astype(np.int64)  # lowest + highest stored value - v
    slope = float(ds.get("RescaleSlope", 1.0) if slope is None else slope)
    intercept = float(ds.get("RescaleIntercept", 0.0) if intercept is None else intercept)
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise DatasetFormatError(path, f"RescaleSlope {slope} / RescaleIntercept {intercept}: expected finite "
                                       f"values and a non-zero slope")
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def dicom_file_kind(path: str | os.PathLike) -> str:
    """``"image"`` for a single-frame file (a radiograph), ``"volume"`` for a multi-frame one (reads the header).

    Raises:
        DatasetFormatError: one slice of a CT/MR/PET/NM series, which is only meaningful with its folder.
    """
    p = Path(path)
    ds = _dcmread(p, header_only=True)
    with _tags_of(p):
        if _n_frames(ds) > 1:
            return "volume"
        modality = str(ds.get("Modality", "")).upper()
    if modality in _CROSS_SECTIONAL:
        raise DatasetFormatError(p, f"one slice of a {modality} series; pass the folder holding the whole series")
    return "image"


def read_dicom(path: Path, options: DicomOptions | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one DICOM file: a multi-frame volume (see :func:`read_dicom_series`) or a 2-D image."""
    ds = _dcmread(path)
    with _tags_of(path):
        frames = _n_frames(ds)
    if frames > 1:
        return _assemble(_frame_planes(path, ds, frames), path, options or DicomOptions(), _series_uid(ds))
    return _image(path, ds)


def read_dicom_file(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one 2-D DICOM image as ``[1, H, W]`` float32 (rescaled; MONOCHROME1 inverted so bright = dense).

    ``meta["max_value"]`` is ``2**BitsStored - 1``, which the CXR preset divides by.
    """
    return _image(path, _dcmread(path))


def _image(path: Path, ds: Any) -> tuple[np.ndarray, dict[str, Any]]:
    pixels = _pixels(ds, path)
    with _tags_of(path):
        if _n_frames(ds) > 1 or pixels.ndim != 2:
            raise DatasetFormatError(path, f"expected a 2-D DICOM image, got pixel shape {pixels.shape}")
        bits = int(ds.get("BitsStored", 16) or 16)
        arr = _values(ds, pixels, path)
        spacing = tuple(float(s) for s in ds.get("PixelSpacing", ds.get("ImagerPixelSpacing", (1.0, 1.0))))
        modality = str(ds.get("Modality", ""))
    meta = {"format": "dicom", "original_shape": arr.shape, "spacing": spacing, "bit_depth": bits,
            "max_value": float(2**bits - 1), "modality": modality}
    return arr[None], meta


def read_dicom_series(folder: Path, options: DicomOptions | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a folder holding one DICOM series as ``[1, X, Y, Z]`` float32 with a RAS+ affine.

    Args:
        folder: the series folder; files are DICOM by extension or by their ``DICM`` marker.
        options: which series to read and how to treat uneven slices (default: refuse; one series only).

    Returns:
        ``(volume, meta)``; meta holds ``affine``, ``spacing``, ``original_shape``, ``slice_files`` (in slice
        order), ``series_uid`` and ``resampled`` (True when uneven slices were interpolated).

    Raises:
        DatasetFormatError: several series (listed) and none picked, mixed PatientIDs, inconsistent or missing
            geometry, duplicates, gaps or uneven spacing, colour or unreadable files; naming the files.
    """
    opts = options or DicomOptions()
    files = dicom_files(folder)
    if not files:
        raise DatasetFormatError(folder, "DICOM series folder holds no files" if not any(folder.iterdir()) else
                                 f"folder holds no DICOM files (expected {', '.join(DICOM_SUFFIXES)} names or "
                                 f"files with the DICM marker)")
    try:
        return _read_series(folder, files, opts)
    except DatasetFormatError:
        raise
    except _TAG_ERRORS as exc:  # tag values are parsed lazily
        raise DatasetFormatError(folder, f"corrupt DICOM tag value in the series ({type(exc).__name__}: {exc})"
                                 ) from exc


def _read_series(folder: Path, files: list[Path], opts: DicomOptions) -> tuple[np.ndarray, dict[str, Any]]:
    headers = _series_headers(folder, files, opts)
    if len(headers) == 1 and _n_frames(headers[0][1]) > 1:
        return read_dicom(headers[0][0], opts)
    for path, ds in headers:
        if _n_frames(ds) > 1:
            raise DatasetFormatError(path, f"a multi-frame file among {len(headers)} files of one series; expected "
                                           f"either single-frame slices or one multi-frame file")
    _refuse_radiographs(folder, headers)
    planes = [_slice_plane(path, ds) for path, ds in headers]
    return _assemble(planes, folder, opts, _series_uid(headers[0][1]))


def _series_headers(folder: Path, files: list[Path], opts: DicomOptions) -> list[tuple[Path, Any]]:
    """Headers of the files of the one series to read (chosen by ``opts.series`` when there are several)."""
    series: dict[str, list[tuple[Path, Any]]] = {}
    for f in files:
        ds = _dcmread(f, header_only=True)
        with _tags_of(f):
            if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == _MEDIA_DIRECTORY:
                log.warning("%s: skipping %s, a DICOMDIR index", folder, f.name)
                continue
            uid = _series_uid(ds)
        if not uid:
            raise DatasetFormatError(f, "DICOM file lacks the SeriesInstanceUID tag, needed to group the series")
        series.setdefault(uid, []).append((f, ds))
    if not series:
        raise DatasetFormatError(folder, "folder holds only DICOMDIR index files, no images")
    chosen = _choose_series(folder, series, opts.series)
    _check_one_patient(folder, chosen)
    return chosen


def _series_number(ds: Any) -> str:
    return str(ds.get("SeriesNumber", "") or "")


def _choose_series(folder: Path, series: dict[str, list[tuple[Path, Any]]],
                   wanted: str | None) -> list[tuple[Path, Any]]:
    if wanted is None and len(series) == 1:
        return next(iter(series.values()))
    if wanted is not None:
        hits = [uid for uid, hs in series.items() if wanted in (uid, _series_number(hs[0][1]))]
        if len(hits) == 1:
            return series[hits[0]]
    rows = []
    for uid, hs in sorted(series.items(), key=lambda kv: (_series_number(kv[1][0][1]).zfill(8), kv[0])):
        ds = hs[0][1]
        desc = str(ds.get("SeriesDescription", "") or "")
        rows.append(f"  {uid}  (SeriesNumber {_series_number(ds) or '-'}, {str(ds.get('Modality', '') or '-')}, "
                    f"{desc!r}, {len(hs)} file(s), e.g. {hs[0][0].name})")
    if wanted is None:
        head = f"holds {len(series)} DICOM series; pick one with --series UID (or its SeriesNumber):"
    else:
        head = f"--series {wanted!r} matches {'no' if not hits else 'more than one'} series here; the series are:"
    raise DatasetFormatError(folder, "\n".join([head, *rows]))


def _check_one_patient(folder: Path, headers: list[tuple[Path, Any]]) -> None:
    patients: dict[str, list[str]] = {}
    for path, ds in headers:
        with _tags_of(path):
            patients.setdefault(str(ds.get("PatientID", "") or ""), []).append(path.name)
    if len(patients) > 1:
        parts = [f"PatientID {pid!r}: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''} ({len(names)} file(s))"
                 for pid, names in sorted(patients.items(), key=lambda kv: -len(kv[1]))]
        raise DatasetFormatError(folder, "one series mixes several patients, refusing to build a volume: "
                                 + "; ".join(parts))


def _refuse_radiographs(folder: Path, headers: list[tuple[Path, Any]]) -> None:
    modalities = {str(ds.get("Modality", "")).upper() for _, ds in headers}
    if modalities <= {"CR", "DX", "MG", "RG", "IO", "PX"} and not any("ImageOrientationPatient" in ds
                                                                     for _, ds in headers):
        names = ", ".join(p.name for p, _ in headers[:5])
        kinds = "/".join(sorted(modalities))
        raise DatasetFormatError(folder, f"holds {len(headers)} projection radiograph(s) ({kinds}: {names}), not a "
                                         f"cross-sectional series; pass each file (or a listing) instead")


def _tag(ds: Any, path: Path, name: str) -> Any:
    value = ds.get(name)
    if value is None:
        raise DatasetFormatError(path, f"DICOM slice lacks the {name} tag, needed to build the volume")
    return value


def _slice_plane(path: Path, header: Any) -> Plane:
    def load() -> np.ndarray:
        ds = _dcmread(path)
        pixels = _pixels(ds, path)
        if pixels.shape != shape:
            raise DatasetFormatError(path, f"pixel data of shape {pixels.shape}; the header says {shape}")
        with _tags_of(path):
            return _values(ds, pixels, path)

    with _tags_of(path):
        shape = (int(_tag(header, path, "Rows")), int(_tag(header, path, "Columns")))
        thickness = header.get("SpacingBetweenSlices") or header.get("SliceThickness")
        return Plane(path.name, path, np.asarray(_tag(header, path, "ImagePositionPatient"), dtype=np.float64),
                     np.asarray(_tag(header, path, "ImageOrientationPatient"), dtype=np.float64),
                     _spacing(_tag(header, path, "PixelSpacing")), shape, load, float(thickness) if thickness else None)


def _spacing(value: Any) -> tuple[float, float]:
    row, col = (float(v) for v in value)
    return row, col


def _group_value(frame: Any, shared: Any, sequence: str, name: str) -> Any:
    """A frame's value of ``sequence[0].name``, from its own functional groups or else the shared ones."""
    for groups in (frame, shared):
        seq = groups.get(sequence) if groups is not None else None
        if seq and name in seq[0]:
            return seq[0].get(name)
    return None


def _frame_planes(path: Path, ds: Any, frames: int) -> list[Plane]:
    """The frames of an enhanced multi-frame file, each with its own position (functional groups)."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if not per or len(per) != frames:
        raise DatasetFormatError(path, f"multi-frame DICOM ({frames} frames) without per-frame geometry (no "
                                       f"PerFrameFunctionalGroupsSequence with a PlanePositionSequence per frame) "
                                       f"is not supported; convert it to NIfTI (for example with dcm2niix)")
    pixels = _pixels(ds, path)
    planes = []
    with _tags_of(path):
        for i, frame in enumerate(per):
            pos = _group_value(frame, shared, "PlanePositionSequence", "ImagePositionPatient")
            ori = _group_value(frame, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = _group_value(frame, shared, "PixelMeasuresSequence", "PixelSpacing")
            if pos is None or ori is None or spacing is None:
                raise DatasetFormatError(path, f"multi-frame DICOM: frame {i + 1} of {frames} lacks its position, "
                                               f"orientation or pixel spacing (functional groups); not supported")
            slope = _group_value(frame, shared, "PixelValueTransformationSequence", "RescaleSlope")
            icpt = _group_value(frame, shared, "PixelValueTransformationSequence", "RescaleIntercept")
            values = _values(ds, pixels[i], path, slope, icpt)
            planes.append(Plane(f"{path.name} frame {i + 1}", path, np.asarray(pos, np.float64),
                                np.asarray(ori, np.float64), _spacing(spacing), tuple(pixels.shape[1:]),
                                lambda v=values: v, _frame_thickness(frame, shared)))
    return planes


def _assemble(planes: list[Plane], where: Path, opts: DicomOptions,
              series_uid: str) -> tuple[np.ndarray, dict[str, Any]]:
    vol, affine, ordered, resampled = stack_planes(planes, where, opts.uneven, opts.tolerance)
    meta = {"format": "dicom-series", "affine": affine, "original_shape": tuple(vol.shape[1:]),
            "spacing": tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))),
            "slice_files": list(dict.fromkeys(str(p.file) for p in ordered)), "series_uid": series_uid,
            "resampled": resampled}
    return vol, meta


def _series_uid(ds: Any) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "")


def _frame_thickness(frame: Any, shared: Any) -> float | None:
    value = _group_value(frame, shared, "PixelMeasuresSequence", "SpacingBetweenSlices") or \
        _group_value(frame, shared, "PixelMeasuresSequence", "SliceThickness")
    return float(value) if value else None
