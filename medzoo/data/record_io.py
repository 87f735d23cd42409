"""A manifest record's image (or slice series) and masks into a sample dict: :func:`load_record`.

The files are read by :func:`medzoo.data.imageio.read_image`; this module applies what the record's ``meta`` says
(COVIDx-CT crop boxes, a slice size, masks to merge) and names the record's source file and line in every error.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from medzoo.data.imageio import NonFinitePolicy, check_series_budget, read_image, resize_2d
from medzoo.data.manifest import DatasetFormatError, Record

__all__ = ["load_record"]


def load_record(record: Record, *, slice_size: tuple[int, int] | None = None,
                nonfinite: NonFinitePolicy = "error") -> dict[str, Any]:
    """Read a record's image (or slice series) and masks into a sample dict of numpy arrays.

    - A COVIDx-CT crop box ``meta["bbox"] = (xmin, ymin, xmax, ymax)`` (x = column) is applied to 2-D images;
      a series uses ``meta["bboxes"]`` (one per slice) or one ``meta["bbox"]`` for all slices.
    - With ``slice_size=(H, W)`` every (cropped) 2-D image or slice is resized to it (bilinear, float32);
      a series needs it when its slices differ in size (slices are stacked into one array).
    - ``meta["mask"]``: a path or a list of paths (for example left + right lung). Several masks, and any 2-D
      mask, are binarised (> 0) and merged with OR; a single NIfTI mask keeps its label values.

    Args:
        record: a manifest record.
        slice_size: (H, W) for 2-D images and slices, or None to keep the size.
        nonfinite: NaN/Inf policy, as in :func:`read_image`.

    Returns:
        ``{"image": [C, *spatial] or [N, C, H, W] for a series, "mask": [1, *spatial] (when the record has
        one), "meta": dict}``. ``meta`` holds the reader's meta plus ``id``, ``patient_id``, ``series``
        and ``source``.

    Raises:
        DatasetFormatError: naming the bad file, plus the record's source file:line when known.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from medzoo.data.imageio import write_png
        >>> p = os.path.join(tempfile.mkdtemp(), "s.png")
        >>> _ = write_png(p, np.zeros((8, 10), np.uint8))
        >>> rec = Record("s", "p1", p, meta={"bbox": (2, 1, 8, 5)})
        >>> load_record(rec)["image"].shape
        (1, 4, 6)
    """
    try:
        if isinstance(record.image, (list, tuple)):
            sample = _load_series(record, slice_size, nonfinite)
        else:
            sample = _load_single(record, slice_size, nonfinite)
    except DatasetFormatError as err:
        src = record.meta.get("source")
        if not src:
            raise
        where = f"{src[0]}:{src[1]}" if isinstance(src, (list, tuple)) and len(src) == 2 else str(src)
        raise DatasetFormatError(err.path, f"{err.reason} (record {record.id!r} from {where})", err.line) from err
    sample["meta"].update(id=record.id, patient_id=record.patient_id, source=record.meta.get("source"))
    return sample


def _crop(arr: np.ndarray, box: Any, path: str) -> np.ndarray:
    xmin, ymin, xmax, ymax = (int(v) for v in box)
    h, w = arr.shape[-2:]
    if not (0 <= xmin < xmax <= w and 0 <= ymin < ymax <= h):
        raise DatasetFormatError(path, f"crop box (xmin, ymin, xmax, ymax) = {tuple(box)} does not fit the "
                                       f"image of size (H, W) = ({h}, {w})")
    return arr[..., ymin:ymax, xmin:xmax]


def _load_single(record: Record, slice_size: tuple[int, int] | None, nonfinite: NonFinitePolicy) -> dict:
    path = str(record.image)
    arr, meta = read_image(path, nonfinite)
    mask = _load_masks(record.meta.get("mask"), arr, path, nonfinite)
    box = record.meta.get("bbox")
    is_2d = arr.ndim == 3
    if box is not None and is_2d:
        arr = _crop(arr, box, path)
        mask = _crop(mask, box, path) if mask is not None else None
        meta["bbox"] = tuple(int(v) for v in box)
    if slice_size is not None and is_2d:
        arr = resize_2d(arr, slice_size)
        mask = resize_2d(mask, slice_size, nearest=True) if mask is not None else None
    meta["series"] = False
    sample = {"image": arr, "meta": meta}
    if mask is not None:
        sample["mask"] = mask
    return sample


def _load_masks(spec: Any, image: np.ndarray, image_path: str, nonfinite: NonFinitePolicy) -> np.ndarray | None:
    if spec is None:
        return None
    paths = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    merged = None
    for mp in paths:
        m, mmeta = read_image(mp, nonfinite)
        if m.shape[1:] != image.shape[1:]:
            raise DatasetFormatError(mp, f"mask shape {tuple(m.shape[1:])} differs from the shape "
                                         f"{tuple(image.shape[1:])} of its image {image_path}")
        m = m[:1]
        if len(paths) > 1 or mmeta["format"] != "nifti":
            m = (m > 0).astype(np.uint8)
        merged = m if merged is None else np.maximum(merged, m)
    return merged


def _load_series(record: Record, slice_size: tuple[int, int] | None, nonfinite: NonFinitePolicy) -> dict:
    paths = [str(p) for p in record.image]
    if not paths:
        raise DatasetFormatError(f"record {record.id}", "series has no slices")
    boxes = record.meta.get("bboxes")
    if boxes is None and record.meta.get("bbox") is not None:
        boxes = [record.meta["bbox"]] * len(paths)
    if boxes is not None and len(boxes) != len(paths):
        raise DatasetFormatError(paths[0], f"series has {len(paths)} slices but {len(boxes)} crop boxes")
    slices, meta0 = [], None
    for i, p in enumerate(paths):
        arr, meta = read_image(p, nonfinite)
        if meta0 is None:
            check_series_budget(p, len(paths), arr.nbytes)
        meta0 = meta0 or meta
        if arr.ndim != 3:
            raise DatasetFormatError(p, f"series slices must be 2-D images, got shape {arr.shape[1:]}")
        arr = _crop(arr, boxes[i], p) if boxes is not None else arr
        arr = resize_2d(arr, slice_size) if slice_size is not None else arr
        if slices and arr.shape != slices[0].shape:
            raise DatasetFormatError(p, f"slice size {arr.shape[1:]} differs from {slices[0].shape[1:]} of "
                                        f"{paths[0]}; pass slice_size to resize slices to one size")
        slices.append(arr)
    meta = {"format": meta0["format"], "max_value": meta0.get("max_value"), "bit_depth": meta0.get("bit_depth"),
            "series": True, "n_slices": len(slices), "filename": paths[0]}
    return {"image": np.stack(slices), "meta": meta}
