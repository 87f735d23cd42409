"""Reading and writing medical images: NIfTI, PNG/JPEG, DICOM series (a record's image and masks into a sample:
:mod:`medzoo.data.record_io`).

Every reader returns ``(array, meta)`` with the array **channel-first**:

- NIfTI: ``[C, X, Y, Z]`` in the file's voxel order (a 3-D file gives C = 1; a 4-D file's last axis becomes C).
  ``meta`` holds ``affine`` (4x4, voxel -> RAS+ mm), ``spacing`` (mm per axis) and ``original_shape``.
- PNG/JPEG: ``[1, H, W]`` for grayscale (8-bit uint8 or 16-bit uint16), ``[3, H, W]`` for colour. ``meta`` holds
  ``bit_depth`` and ``max_value`` (255 or 65535), used by the CXR preset to scale intensities to [0, 1].
- DICOM (pydicom is optional; files are recognised by a ``.dcm``/``.dicom`` name or the ``DICM`` marker):
  a folder holding one series, or a multi-frame file with per-frame geometry, gives ``[1, X, Y, Z]`` float32 in
  HU (rescale applied) with a RAS+ ``affine`` like NIfTI; a single-frame file (a radiograph) gives ``[1, H, W]``
  float32 with ``max_value``. Several series, mixed patients, gaps and uneven slices are refused (see
  :mod:`medzoo.data._dicom`; :class:`DicomOptions` picks a series or resamples).

Volumes whose voxel spacing or field of view no scanner produces (zero, negative, NaN, under 1 µm, over 50 mm, or
over 3 m across) are refused when read, before anything is resampled.

Non-finite voxels (NaN/Inf, possible only in float files) raise by default (``nonfinite="error"``); pass
``"zero"`` to replace them with 0 or ``"keep"`` to leave them. Unreadable, empty or truncated files raise
:class:`~medzoo.data.manifest.DatasetFormatError` naming the file.

torch is imported inside :func:`resize_2d` and :func:`load_gray` only: reading or writing a file must not start
torch (2 s and some 300 MB resident here), so that the synthetic corpus writer stays quick and the robustness tests
measure each reader's own peak memory.

Example:
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = write_nifti(os.path.join(d, "a.nii.gz"), np.zeros((4, 5, 6), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]))
    >>> arr, meta = read_image(os.path.join(d, "a.nii.gz"))
    >>> arr.shape, meta["spacing"]
    ((1, 4, 5, 6), (2.0, 2.0, 3.0))
"""

from __future__ import annotations

import gzip
import io
import logging
import os
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from PIL import Image

from medzoo.data._dicom import DICOM_SUFFIXES, DicomOptions, is_dicom_file, read_dicom, read_dicom_series
from medzoo.data._dicom_write import write_dicom_series as _write_dicom_series
from medzoo.data._geometry import check_voxel_geometry
from medzoo.data._nifti import load_nifti
from medzoo.data.budget import MAX_PIXELS, MAX_VOLUME_BYTES, check_budget
from medzoo.data.manifest import DatasetFormatError
from medzoo.utils.atomic import atomic_write

__all__ = [
    "read_image",
    "write_nifti",
    "write_png",
    "write_dicom_series",
    "resize_2d",
    "NonFinitePolicy",
    "check_series_budget",
    "DicomOptions",
    "NIFTI_SUFFIXES",
    "RASTER_SUFFIXES",
    "DICOM_SUFFIXES",
]

log = logging.getLogger(__name__)

NonFinitePolicy = Literal["error", "zero", "keep"]
NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image(path: str | os.PathLike, nonfinite: NonFinitePolicy = "error",
               dicom: DicomOptions | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one image (file) or one DICOM series (folder).

    Args:
        path: ``.nii``/``.nii.gz``, ``.png``/``.jpg``/``.jpeg``, a DICOM file (by name or ``DICM`` marker), or a
            folder of DICOM slices.
        nonfinite: what to do with NaN/Inf voxels: ``"error"`` (default), ``"zero"`` or ``"keep"``.
        dicom: which series of a DICOM folder to read, and whether to resample uneven slices (default: the
            folder's only series; uneven slices refused).

    Returns:
        ``(array, meta)``; the array is channel-first (see the module docstring), in the file's dtype
        (float32 for DICOM series). ``meta["filename"]`` is the path read.

    Raises:
        DatasetFormatError: missing, empty, truncated or unreadable file; unknown suffix; non-finite voxels;
            implausible voxel spacing; a DICOM folder that is not one clean series.
    """
    p = Path(path)
    if p.is_dir():
        arr, meta = read_dicom_series(p, dicom)
    else:
        _check_file(p)
        name = p.name.lower()
        if name.endswith(NIFTI_SUFFIXES):
            arr, meta = _read_nifti(p)
        elif name.endswith(RASTER_SUFFIXES):
            arr, meta = _read_raster(p)
        elif is_dicom_file(p):
            arr, meta = read_dicom(p, dicom)
        else:
            raise DatasetFormatError(p, f"unsupported image type; expected one of "
                                        f"{NIFTI_SUFFIXES + RASTER_SUFFIXES + DICOM_SUFFIXES}, a DICOM file (with "
                                        f"the DICM marker) or a DICOM folder")
    meta["filename"] = str(p)
    return _handle_nonfinite(arr, p, nonfinite), meta


def _check_file(p: Path) -> None:
    if not p.exists():
        raise DatasetFormatError(p, "image file not found")
    if p.stat().st_size == 0:
        raise DatasetFormatError(p, "image file is empty (0 bytes)")


def _handle_nonfinite(arr: np.ndarray, p: Path, policy: NonFinitePolicy) -> np.ndarray:
    if policy not in ("error", "zero", "keep"):
        raise ValueError(f"nonfinite must be 'error', 'zero' or 'keep', got {policy!r}")
    if policy == "keep" or not np.issubdtype(arr.dtype, np.floating):
        return arr
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return arr
    if policy == "error":
        raise DatasetFormatError(p, f"{n_bad} NaN/Inf voxel(s); expected finite values "
                                    f"(read with nonfinite='zero' to replace them by 0)")
    log.warning("%s: replaced %d NaN/Inf voxel(s) by 0", p, n_bad)
    arr = np.array(arr, copy=True)
    arr[bad] = 0
    return arr


def _read_nifti(p: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        data, affine = load_nifti(p)  # the header's dims x item size are checked against the budget first
    except DatasetFormatError:
        raise
    except Exception as exc:  # nibabel raises many types for truncated/corrupt files
        raise DatasetFormatError(p, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    original_shape = tuple(int(s) for s in data.shape)
    if data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, C): NIfTI's vector-valued layout
        data = data[:, :, :, 0, :]
    if data.ndim in (2, 3):
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)
    else:
        raise DatasetFormatError(p, f"expected a 2-D, 3-D or 4-D NIfTI image, got shape {original_shape}")
    spacing = check_voxel_geometry(affine, data.shape[1:4], p)  # the affine (sform first), as resampling uses it
    meta = {"format": "nifti", "affine": affine, "spacing": spacing, "original_shape": original_shape}
    return np.ascontiguousarray(data), meta


def _read_raster(p: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        with Image.open(p) as img:
            width, height = img.size  # from the header: nothing is decoded yet
            check_budget(p, MAX_PIXELS, width * height, f"{width} x {height} pixels, mode {img.mode}")
            img.load()
            arr, bit_depth = _pil_to_array(img)
    except DatasetFormatError:
        raise
    except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError on truncated files
        raise DatasetFormatError(p, f"cannot read image ({type(exc).__name__}: {exc})") from exc
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    arr = np.array(arr, copy=True, order="C")  # Pillow's buffer is read-only
    meta = {"format": p.suffix.lower().lstrip("."), "bit_depth": bit_depth, "max_value": float(2**bit_depth - 1),
            "original_shape": tuple(int(s) for s in arr.shape[1:]), "spacing": (1.0, 1.0)}
    return np.ascontiguousarray(arr), meta


def _pil_to_array(img: Any) -> tuple[np.ndarray, int]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.uint16), 16
    if mode == "I":  # 32-bit int container, used by some Pillow versions for 16-bit PNG
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise DatasetFormatError(img.filename, "32-bit integer image with values outside 0..65535")
        return arr.astype(np.uint16), 16
    if mode in ("L", "1", "P", "LA"):
        img = img.convert("L") if mode != "L" else img
        return np.asarray(img, dtype=np.uint8), 8
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8), 8
    raise DatasetFormatError(getattr(img, "filename", "?"), f"unsupported image mode {mode!r}")


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, compresslevel: int = 6) -> Path:
    """Write a NIfTI-1 file (``.nii`` or ``.nii.gz``, gzip without a timestamp, so output is reproducible).

    Args:
        path: destination.
        array: ``[X, Y, Z]`` or channel-first ``[1, X, Y, Z]``; the dtype is kept.
        affine: 4x4 voxel -> RAS+ mm; stored as both qform and sform (code 1, scanner).
        compresslevel: gzip level for ``.nii.gz``.

    Returns:
        The path written.
    """
    p = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    data = gzip.compress(raw, compresslevel=compresslevel, mtime=0) if p.name.endswith(".gz") else raw
    _atomic_write(p, data)
    return p


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a grayscale PNG, atomically (a temp file renamed into place).

    Args:
        path: destination.
        array: ``[H, W]`` or ``[1, H, W]``, uint8 (8-bit PNG) or uint16 (16-bit PNG).

    Returns:
        The path written.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png expects a [H, W] uint8 or uint16 array, got {arr.shape} {arr.dtype}")
    img = Image.fromarray(np.ascontiguousarray(arr))  # uint8 -> mode L, uint16 -> mode I;16
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    p = Path(path)
    _atomic_write(p, buf.getvalue())  # a full disk leaves no zero-byte PNG under the final name
    return p


def write_dicom_series(folder: str | os.PathLike, volume: np.ndarray, spacing: tuple[float, float, float],
                       origin: tuple[float, float, float] = (0.0, 0.0, 0.0), series_uid_seed: str = "medzoo",
                       file_names: list[str] | None = None) -> list[Path]:
    """Write a CT volume as one DICOM file per slice (needs pydicom). See ``medzoo.data._dicom``."""
    return _write_dicom_series(folder, volume, spacing, origin=origin, series_uid_seed=series_uid_seed,
                               file_names=file_names)


def _atomic_write(p: Path, data: bytes) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, data)  # after a failed write (a full disk): no stray temp file, and the error names the file


def resize_2d(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize ``[C, H, W]`` to ``[C, *size]`` (float32; bilinear with antialiasing, or nearest for masks)."""
    import torch
    import torch.nn.functional as F

    if tuple(arr.shape[-2:]) == tuple(size):
        return np.asarray(arr, dtype=np.float32) if not nearest else np.asarray(arr)
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
    if nearest:
        out = F.interpolate(t, size=tuple(size), mode="nearest-exact")
        return out[0].numpy().astype(arr.dtype)
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0].numpy()


def check_series_budget(first: str | os.PathLike, n_slices: int, slice_bytes: int) -> None:
    """Refuse a slice series whose stacked array (``n_slices`` x the first slice's bytes) exceeds the volume budget.

    Checked after the first slice, before the others are read: each slice is within the pixel budget, but a folder
    of a thousand small files can still declare tens of gigabytes.

    Raises:
        BudgetExceeded: naming the first slice.
    """
    check_budget(first, MAX_VOLUME_BYTES, n_slices * slice_bytes, f"{n_slices} slices of {slice_bytes} bytes")


def load_gray(path: str | os.PathLike) -> Any:
    """Read a single-channel image file as a torch tensor ``[1, H, W]`` float32 in [0, 1].

    Intensities are divided by the reader's ``meta["max_value"]`` (255, 65535, a DICOM's ``2**BitsStored - 1``), as
    the CXR contract's ``rescale: max_value`` step does, so that ``medzoo align`` sees a radiograph as ``predict``
    does; an image without one (float data) is min-max scaled.

    Raises:
        ValueError: the file is not a single-channel 2D image, naming the file and its shape.
    """
    import torch

    arr, meta = read_image(path)
    arr = np.asarray(arr)
    if arr.ndim == 4 and arr.shape[-1] == 1:  # NIfTI [1, X, Y, 1]
        arr = arr[..., 0]
    if arr.ndim != 3 or arr.shape[0] != 1:
        raise ValueError(f"{path}: expected a single-channel 2D image, got array shape {arr.shape}")
    if meta.get("max_value"):
        out = arr.astype(np.float32) / float(meta["max_value"])
    else:
        lo, hi = float(arr.min()), float(arr.max())
        out = (arr.astype(np.float32) - lo) / (hi - lo if hi > lo else 1.0)
    return torch.from_numpy(np.ascontiguousarray(out))
