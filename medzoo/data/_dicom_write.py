"""DICOM reading and writing (pydicom is an optional dependency: ``pip install medzoo[dicom]``).

A series folder is read as a ``[1, X, Y, Z]`` float32 volume in HU, where X runs along a row (column index),
Y down the columns (row index) and Z along the slice normal, sorted by ImagePositionPatient projected on the
normal (file names and order on disk do not matter). The affine maps voxels to RAS+ mm, the same convention
as nibabel, so a series and its NIfTI conversion give the same array and affine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.data.manifest import DatasetFormatError

__all__ = ["read_dicom_series", "read_dicom_file", "write_dicom_series", "write_dicom_image", "require_pydicom"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage, for presentation


def require_pydicom(what: str) -> Any:
    """Import pydicom or raise an ImportError that says how to install it."""
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what} needs pydicom, an optional dependency: pip install 'medzoo[dicom]'") from exc
    return pydicom


def _read(path: Path, pydicom: Any) -> Any:
    if path.stat().st_size == 0:
        raise DatasetFormatError(path, "DICOM file is empty (0 bytes)")
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, ValueError...
        raise DatasetFormatError(path, f"cannot read DICOM ({type(exc).__name__}: {exc})") from exc
    return ds, pixels


def _tag(ds: Any, path: Path, name: str) -> Any:
    value = getattr(ds, name, None)
    if value is None:
        raise DatasetFormatError(path, f"DICOM slice lacks the {name} tag, needed to build the volume")
    return value


def _hu(ds: Any, pixels: np.ndarray) -> np.ndarray:
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_dicom_file(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one 2-D DICOM image as ``[1, H, W]`` float32 (rescaled; MONOCHROME1 inverted so bright = dense).

    ``meta["max_value"]`` is ``2**BitsStored - 1``, which the CXR preset divides by.
    """
    pydicom = require_pydicom(f"reading {path}")
    ds, pixels = _read(path, pydicom)
    if pixels.ndim != 2:
        raise DatasetFormatError(path, f"expected a 2-D DICOM image, got pixel shape {pixels.shape}")
    try:  # tag values are parsed lazily: a corrupt one fails here
        bits = int(getattr(ds, "BitsStored", 16) or 16)
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            pixels = (2**bits - 1) - pixels.astype(np.int64)  # bright = dense, like MONOCHROME2
        arr = _hu(ds, pixels)
        spacing = tuple(float(s) for s in getattr(ds, "PixelSpacing", (1.0, 1.0)))
    except (ValueError, TypeError, OverflowError) as exc:
        raise DatasetFormatError(path, f"corrupt DICOM tag value ({type(exc).__name__}: {exc})") from exc
    meta = {"format": "dicom", "original_shape": arr.shape, "spacing": spacing, "bit_depth": bits,
            "max_value": float(2**bits - 1)}
    return arr[None], meta


def read_dicom_series(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a folder of DICOM slices (hidden files skipped) as ``[1, X, Y, Z]`` float32 HU, with a RAS affine."""
    pydicom = require_pydicom(f"reading the DICOM series {folder}")
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise DatasetFormatError(folder, "DICOM series folder holds no files")
    try:
        return _read_series(files, pydicom)
    except DatasetFormatError:
        raise
    except (ValueError, TypeError, OverflowError, IndexError) as exc:  # tag values are parsed lazily
        raise DatasetFormatError(folder, f"corrupt DICOM tag value in the series ({type(exc).__name__}: {exc})"
                                 ) from exc


def _read_series(files: list[Path], pydicom: Any) -> tuple[np.ndarray, dict[str, Any]]:
    slices = []
    for f in files:
        ds, pixels = _read(f, pydicom)
        orient = np.asarray(_tag(ds, f, "ImageOrientationPatient"), dtype=np.float64)
        pos = np.asarray(_tag(ds, f, "ImagePositionPatient"), dtype=np.float64)
        slices.append((f, ds, pixels, orient, pos))
    _, ds0, px0, orient0, _ = slices[0]
    row_dir, col_dir = orient0[:3], orient0[3:]
    normal = np.cross(row_dir, col_dir)
    for f, _, px, orient, _ in slices:
        if px.shape != px0.shape or not np.allclose(orient, orient0, atol=1e-4):
            raise DatasetFormatError(f, f"slice shape {px.shape} / orientation {orient.tolist()} differs from "
                                        f"{slices[0][0].name} ({px0.shape} / {orient0.tolist()})")
    slices.sort(key=lambda s: float(np.dot(s[4], normal)))
    depths = [float(np.dot(s[4], normal)) for s in slices]
    for a, b, da, db in zip(slices, slices[1:], depths, depths[1:]):
        if abs(db - da) < 1e-6:
            raise DatasetFormatError(b[0], f"has the same slice position as {a[0].name}")
    vol = np.stack([_hu(ds, px) for _, ds, px, _, _ in slices], axis=-1)  # [rows, cols, Z]
    vol = np.ascontiguousarray(vol.transpose(1, 0, 2))[None]  # [1, X=cols, Y=rows, Z]
    row_spacing, col_spacing = (float(v) for v in _tag(ds0, files[0], "PixelSpacing"))
    if len(slices) > 1:
        step = (slices[-1][4] - slices[0][4]) / (len(slices) - 1)
    else:
        step = normal * float(getattr(ds0, "SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * col_spacing, col_dir * row_spacing, step, slices[0][4]
    meta = {"format": "dicom-series", "affine": _LPS_TO_RAS @ lps, "original_shape": tuple(vol.shape[1:]),
            "spacing": (col_spacing, row_spacing, float(np.linalg.norm(step))),
            "slice_files": [str(s[0]) for s in slices]}
    return vol, meta


def write_dicom_series(folder: str | os.PathLike, volume: np.ndarray, spacing: tuple[float, float, float],
                       origin: tuple[float, float, float] = (0.0, 0.0, 0.0), series_uid_seed: str = "medzoo",
                       file_names: list[str] | None = None) -> list[Path]:
    """Write a ``[X, Y, Z]`` HU volume as CT slices (axial, LPS identity orientation), reproducibly.

    Pixels are stored unsigned with RescaleIntercept -1024 so that readers must apply the rescale. The series
    reads back (``read_dicom_series``) as the same array, with affine ``diag(-sx, -sy, sz)`` and origin
    ``(-ox, -oy, oz)`` in RAS. UIDs derive from ``series_uid_seed``; no dates are written.

    Args:
        folder: created if needed.
        volume: ``[X, Y, Z]`` (or ``[1, X, Y, Z]``) HU values in -1024..64511.
        spacing: (sx, sy, sz) mm.
        origin: LPS position of voxel (0, 0, 0).
        series_uid_seed: makes the UIDs unique per series and reproducible.
        file_names: optional names per slice, in slice order (default ``IM0001.dcm``...).

    Returns:
        The slice paths, in slice order.
    """
    require_pydicom("write_dicom_series")
    from pydicom.uid import generate_uid

    vol = np.asarray(volume)
    vol = vol[0] if vol.ndim == 4 else vol
    stored = np.rint(vol.astype(np.float64) + 1024.0)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("write_dicom_series: HU values must lie in -1024..64511")
    stored = stored.astype(np.uint16)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    names = file_names or [f"IM{k + 1:04d}.dcm" for k in range(vol.shape[2])]
    uids = {"series": generate_uid(entropy_srcs=[series_uid_seed, "series"]),
            "study": generate_uid(entropy_srcs=[series_uid_seed, "study"])}
    paths = []
    for k in range(vol.shape[2]):
        ds = _ct_slice_dataset(out / names[k], stored[:, :, k], k, spacing, origin, series_uid_seed, uids)
        ds.save_as(str(out / names[k]), enforce_file_format=True)
        paths.append(out / names[k])
    return paths


def _ct_slice_dataset(path: Path, plane: np.ndarray, k: int, spacing: tuple[float, float, float],
                      origin: tuple[float, float, float], seed: str, uids: dict[str, str]) -> Any:
    """One axial CT slice (``plane`` is ``[X, Y]`` uint16, stored as rows = Y, columns = X)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[seed, str(k)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = _CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", seed[:64], k + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2] + k * spacing[2])]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing (Y), column spacing (X)
    ds.SliceThickness = float(spacing[2])
    ds.Rows, ds.Columns = int(plane.shape[1]), int(plane.shape[0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.ascontiguousarray(plane.T).tobytes()
    return ds


def write_dicom_image(path: str | os.PathLike, image: np.ndarray, uid_seed: str, monochrome1: bool = False,
                      pixel_spacing: tuple[float, float] = (0.139, 0.139)) -> Path:
    """Write a 2-D uint16 radiograph as a DX DICOM file (reproducible UIDs, no dates).

    With ``monochrome1`` the stored pixels are inverted (bright = low value), as some VinDr-CXR files are;
    :func:`read_dicom_file` undoes it.
    """
    require_pydicom("write_dicom_image")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    img = np.asarray(image)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise ValueError(f"write_dicom_image expects a [H, W] uint16 array, got {img.shape} {img.dtype}")
    stored = (65535 - img) if monochrome1 else img
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _DX_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "image"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = _DX_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.Modality, ds.PatientID = "DX", uid_seed[:64]
    ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.save_as(str(p), enforce_file_format=True)
    return p
