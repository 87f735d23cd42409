"""Writing DICOM: a CT volume as one file per slice, and a radiograph as one DX file (needs pydicom).

pydicom is an optional dependency (``pip install medzoo[dicom]``), so it is imported inside the writers, after
:func:`~medzoo.data._dicom.require_pydicom` has said how to install it.

The files are complete enough for any reader (SOP class, UIDs, geometry, rescale), and reproducible: UIDs derive
from a seed and no dates are written. The synthetic corpus uses them; :mod:`medzoo.data._dicom` reads them back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.data._dicom import require_pydicom

__all__ = ["write_dicom_series", "write_dicom_image"]

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage, for presentation


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
