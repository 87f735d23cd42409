"""Real DICOM files built with pydicom for the tests, independently of medzoo's own writer, and the geometry of
DICOM PS3.3 C.7.6.2.1.1 written out, to check medzoo's affines against.

Every file carries its SOP Class UID, SeriesInstanceUID, PatientID, ImagePositionPatient, ImageOrientationPatient,
PixelSpacing, SliceThickness, PhotometricInterpretation and rescale tags, as a scanner writes them. Stored pixels
are ``uint16`` with 12 bits stored; ``stored`` arrays are ``[rows, columns]`` (one slice) or
``[slices, rows, columns]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence as DicomSequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402
from pydicom.valuerep import DSfloat  # noqa: E402

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
BITS = 12


def uid(*seed: str) -> str:
    """A reproducible UID."""
    return generate_uid(entropy_srcs=list(seed))


def ds_values(values: Sequence[float]) -> list[DSfloat]:
    """Decimal strings of at most 16 characters, as the standard requires (what the file then holds exactly)."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _dataset(path: Path, sop_class: str, seed: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid(seed, "instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def _pixels(ds: Dataset, stored: np.ndarray, photometric: str, bits: int = BITS) -> None:
    arr = np.asarray(stored)
    assert arr.dtype == np.uint16 and arr.max() < 2**bits, f"stored pixels are uint16 with {bits} bits"
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(arr).tobytes()


def write_ct_slice(path: Path, stored: np.ndarray, position: Sequence[float], *, series_uid: str,
                   orientation: Sequence[float] = AXIAL, pixel_spacing: Sequence[float] = (0.8, 0.7),
                   thickness: float = 2.0, patient_id: str = "PAT-1", series_number: int = 1,
                   description: str = "chest", photometric: str = "MONOCHROME2", slope: float = 1.0,
                   intercept: float = -1024.0, instance: int = 1) -> Path:
    """One CT Image Storage slice; ``pixel_spacing`` is (row spacing, column spacing) as DICOM orders it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _dataset(path, CT_IMAGE, f"{series_uid}/{instance}/{path.name}")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(patient_id, "study"), series_uid
    ds.Modality, ds.PatientID, ds.SeriesNumber, ds.SeriesDescription = "CT", patient_id, series_number, description
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = ds_values(position)
    ds.ImageOrientationPatient = ds_values(orientation)
    ds.PixelSpacing = ds_values(pixel_spacing)
    ds.SliceThickness = float(thickness)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
    _pixels(ds, stored, photometric)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_ct_series(folder: Path, stored: np.ndarray, positions: Sequence[Sequence[float]],
                    names: Sequence[str] | None = None, **kw) -> list[Path]:
    """A CT series: slice ``k`` of ``stored [N, rows, columns]`` at ``positions[k]`` (file ``names[k]``)."""
    series_uid = kw.pop("series_uid", uid(str(folder), "series"))
    names = names or [f"IM{k + 1:04d}.dcm" for k in range(len(positions))]
    return [write_ct_slice(Path(folder) / names[k], stored[k], positions[k], series_uid=series_uid, instance=k + 1,
                           **kw) for k in range(len(positions))]


def stack_positions(n: int, origin: Sequence[float] = (-40.0, -35.0, 100.0), orientation: Sequence[float] = AXIAL,
                    step: float = 2.0, shift: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """``[n, 3]`` positions ``step`` mm apart along the normal of ``orientation`` (plus ``shift`` per slice: tilt)."""
    o = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    return np.asarray(origin) + np.arange(n)[:, None] * (step * normal + np.asarray(shift))


def write_radiograph(path: Path, stored: np.ndarray, *, modality: str = "CR", photometric: str = "MONOCHROME2",
                     patient_id: str = "PAT-X", bits: int = BITS) -> Path:
    """A CR (Computed Radiography) or DX (Digital X-Ray) file, as a radiograph is exported (``bits`` stored)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _dataset(path, CR_IMAGE if modality == "CR" else DX_IMAGE, f"{path.name}/{modality}")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(patient_id, "study"), uid(path.name, "series")
    ds.Modality, ds.PatientID, ds.SeriesNumber = modality, patient_id, 1
    ds.ImagerPixelSpacing = [0.139, 0.139]
    _pixels(ds, stored, photometric, bits)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _item(**values) -> Dataset:
    d = Dataset()
    for k, v in values.items():
        setattr(d, k, v)
    return d


def write_enhanced_ct(path: Path, stored: np.ndarray, positions: Sequence[Sequence[float]], *,
                      orientation: Sequence[float] = AXIAL, pixel_spacing: Sequence[float] = (0.8, 0.7),
                      thickness: float = 2.0, slopes: Sequence[float] | None = None,
                      intercept: float = -1024.0, per_frame_geometry: bool = True) -> Path:
    """An Enhanced CT multi-frame file: frame ``k`` at ``positions[k]`` (PlanePositionSequence per frame), with
    the orientation and pixel measures shared; ``per_frame_geometry=False`` leaves the per-frame groups out."""
    path = Path(path)
    ds = _dataset(path, ENHANCED_CT_IMAGE, f"{path.name}/enhanced")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(path.name, "study"), uid(path.name, "series")
    ds.Modality, ds.PatientID, ds.NumberOfFrames = "CT", "PAT-MF", len(stored)
    shared = _item(PlaneOrientationSequence=DicomSequence([_item(ImageOrientationPatient=ds_values(orientation))]),
                   PixelMeasuresSequence=DicomSequence([_item(PixelSpacing=ds_values(pixel_spacing),
                                                              SliceThickness=thickness)]))
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    if per_frame_geometry:
        slopes = slopes or [1.0] * len(stored)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence([
            _item(PlanePositionSequence=DicomSequence([_item(ImagePositionPatient=ds_values(pos))]),
                  PixelValueTransformationSequence=DicomSequence([_item(RescaleSlope=s, RescaleIntercept=intercept,
                                                                        RescaleType="HU")]))
            for pos, s in zip(positions, slopes)])
    _pixels(ds, stored, "MONOCHROME2")
    ds.save_as(str(path), enforce_file_format=True)
    return path


def standard_lps_affine(orientation: Sequence[float], pixel_spacing: Sequence[float], first: Sequence[float],
                        last: Sequence[float], n: int) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1, extended to a stack: LPS of pixel (column c, row r) of slice k is
    ``first + X * dc * c + Y * dr * r + (last - first) / (n - 1) * k`` (X: row direction, dc: column spacing)."""
    x, y = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    dr, dc = float(pixel_spacing[0]), float(pixel_spacing[1])
    m = np.zeros((4, 4))
    m[:3, 0], m[:3, 1] = x * dc, y * dr
    m[:3, 2] = (np.asarray(last, float) - np.asarray(first, float)) / (n - 1)
    m[:3, 3], m[3, 3] = first, 1.0
    return m


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """RAS = diag(-1, -1, 1) LPS (the x and y axes of DICOM's patient system point the other way)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def world_of_pixel(position: Sequence[float], orientation: Sequence[float], pixel_spacing: Sequence[float],
                   column: int, row: int) -> np.ndarray:
    """RAS position of one pixel of one slice file, straight from its tags (DICOM PS3.3 C.7.6.2.1.1)."""
    x, y = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    lps = np.asarray(position, float) + x * float(pixel_spacing[1]) * column + y * float(pixel_spacing[0]) * row
    return np.array([-lps[0], -lps[1], lps[2]])
