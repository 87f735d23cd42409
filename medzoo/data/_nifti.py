"""Reading a NIfTI file within the volume budget: the header's dims x item size are checked before any voxel is read.

A ``.nii.gz`` is decompressed in two steps: its first 540 bytes, whose header is checked, then the whole stream with
zlib's output capped at what that header declares (plus 1 MiB of padding some writers add): a small file can never
make the reader decompress gigabytes. The whole stream is decompressed, so zlib checks every member's CRC-32 and
length (nibabel alone stops once it has the voxels, and a flipped bit would read as silently different voxels).

Example:
    >>> import numpy as np, nibabel as nib, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.nii.gz")
    >>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), p)
    >>> data, affine = load_nifti(p)
    >>> data.shape, affine.shape
    ((4, 5, 6), (4, 4))
"""

from __future__ import annotations

import io
import math
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medzoo.data.budget import MAX_VOLUME_BYTES, check_budget
from medzoo.data.manifest import DatasetFormatError

__all__ = ["load_nifti", "TRAILING_LIMIT"]

TRAILING_LIMIT = 1 << 20  # bytes a stream may hold past its declared voxels (padding some writers add)
_HEADER_SIZES = {348: "Nifti1Image", 540: "Nifti2Image"}
_GZIP = 16 + zlib.MAX_WBITS  # zlib wbits for the gzip container


def _image_class(p: Path, head: bytes) -> Any:
    for order in ("little", "big"):
        name = _HEADER_SIZES.get(int.from_bytes(head[:4], order))
        if name is not None:
            return getattr(nib, name)
    raise DatasetFormatError(p, f"not a NIfTI file (sizeof_hdr is neither 348 nor 540, got first bytes {head[:4]!r})")


def _check_declared(p: Path, cls: Any, head: bytes) -> int:
    """The bytes of voxel data the header declares (checked against the budget); returns the data's end offset."""
    if len(head) < cls.header_class.sizeof_hdr:
        raise DatasetFormatError(p, f"truncated NIfTI header ({len(head)} of {cls.header_class.sizeof_hdr} bytes)")
    header = cls.header_class.from_fileobj(io.BytesIO(head[: cls.header_class.sizeof_hdr]), check=False)
    shape = tuple(int(s) for s in header.get_data_shape())
    dtype = header.get_data_dtype()
    nbytes = math.prod(shape) * dtype.itemsize
    check_budget(p, MAX_VOLUME_BYTES, nbytes, f"header shape {shape} x {dtype.name}")
    return int(header.get_data_offset()) + nbytes


def load_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file (``.nii`` or ``.nii.gz``) after checking the size its header declares.

    Returns:
        ``(data, affine)``: the voxels as nibabel gives them (``np.asarray(img.dataobj)``, scaling applied) and the
        4x4 voxel -> world affine (sform first).

    Raises:
        BudgetExceeded: the header declares more voxel data than ``MEDZOO_MAX_VOLUME_BYTES``.
        DatasetFormatError: not NIfTI, a truncated header, a gzip stream longer than declared. Other corruption
            raises nibabel's or zlib's own errors, which :func:`~medzoo.data.imageio.read_image` wraps with the
            file name.
    """
    p = Path(path)
    if not p.name.lower().endswith(".gz"):
        with open(p, "rb") as fh:
            head = fh.read(540)
        _check_declared(p, _image_class(p, head), head)
        img = nib.load(str(p))
        return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)
    compressed = p.read_bytes()  # the file's own size; what it expands to is what gets checked
    head = zlib.decompressobj(_GZIP).decompress(compressed, 540)
    cls = _image_class(p, head)
    raw = _gunzip_capped(p, compressed, _check_declared(p, cls, head) + TRAILING_LIMIT)
    img = cls.from_bytes(raw)
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def _gunzip_capped(p: Path, data: bytes, cap: int) -> bytes:
    """Decompress every gzip member of ``data`` (zlib checks each CRC-32 and length), refusing more than ``cap``."""
    out: list[bytes] = []
    total = 0
    while data:
        member = zlib.decompressobj(_GZIP)
        chunk = member.decompress(data, cap + 1 - total)
        total += len(chunk)
        if total > cap:
            raise DatasetFormatError(p, f"the gzip stream expands to more than the {cap - TRAILING_LIMIT} bytes its "
                                        f"header declares (plus {TRAILING_LIMIT}); refused (a decompression bomb?)")
        if not member.eof:
            raise DatasetFormatError(p, f"the gzip stream is cut short after {total} bytes (a truncated file)")
        out.append(chunk)
        data = member.unused_data.lstrip(b"\0")  # gzip allows zero padding between and after members
    return b"".join(out)
