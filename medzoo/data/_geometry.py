"""Voxel geometry checks shared by the NIfTI and DICOM readers, and the slice layout of a DICOM series.

- :func:`check_voxel_geometry` refuses spacings that no scanner produces (zero, negative, NaN, under 1 µm, over
  50 mm) and fields of view over 3 m: resampling such a volume to a model's spacing would collapse it to one
  voxel or allocate without bound.
- :func:`slice_layout` orders DICOM slices along the slice normal and checks that they form one uniform stack:
  duplicates, missing slices, uneven steps and slices off the stack's line are refused (or, for uneven steps and
  gaps, resampled onto a uniform grid when asked).
- :func:`dicom_affine` builds the voxel -> RAS+ affine from DICOM's LPS tags, as nibabel and MONAI do.

Example:
    >>> import numpy as np
    >>> lay = slice_layout(np.array([[0, 0, 2.0], [0, 0, 0.0], [0, 0, 1.0]]), np.array([0, 0, 1.0]),
    ...                    ["b", "a", "c"], "series")
    >>> lay.order, lay.step.tolist()
    ([1, 2, 0], [0.0, 0.0, 1.0])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medzoo.data.manifest import DatasetFormatError

__all__ = ["MIN_SPACING_MM", "MAX_SPACING_MM", "MAX_EXTENT_MM", "UnevenPolicy", "SliceLayout", "Plane",
           "check_voxel_geometry", "slice_layout", "resample_slices", "dicom_affine", "stack_planes"]

log = logging.getLogger(__name__)

MIN_SPACING_MM = 1e-3  # 1 µm: finer than any CT, MR or radiograph
MAX_SPACING_MM = 50.0  # coarser than any clinical slice
MAX_EXTENT_MM = 3000.0  # a field of view longer than a 3 m body means a wrong header
UnevenPolicy = Literal["error", "resample"]
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DUPLICATE_MM = 1e-3


def check_voxel_geometry(affine: np.ndarray, shape: Sequence[int], where: str | Path) -> tuple[float, ...]:
    """Refuse an affine whose voxel sizes or field of view are absurd.

    Args:
        affine: 4x4 voxel -> world (mm).
        shape: the spatial shape ``[X, Y, Z]`` (2 or 3 entries).
        where: the file, named in the error.

    Returns:
        The voxel sizes (column norms of ``affine[:3, :3]``), one per axis.

    Raises:
        DatasetFormatError: a non-finite or singular affine, a spacing outside 1 µm..50 mm, or an extent over 3 m.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise DatasetFormatError(where, f"the voxel-to-world affine is not a finite 4x4 matrix: {a.tolist()}")
    sizes = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    for axis, (size, n) in enumerate(zip(sizes, list(shape) + [1] * (3 - len(shape)))):
        if not MIN_SPACING_MM <= size <= MAX_SPACING_MM:
            raise DatasetFormatError(where, f"voxel spacing {size:.6g} mm along axis {axis} is not plausible; "
                                            f"expected {MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm (check the header's "
                                            f"pixdim / sform, or the DICOM spacing tags)")
        if size * n > MAX_EXTENT_MM:
            raise DatasetFormatError(where, f"field of view {size * n:.6g} mm ({n} voxels of {size:.6g} mm) along "
                                            f"axis {axis} exceeds {MAX_EXTENT_MM:g} mm; the header's spacing is wrong")
    if abs(np.linalg.det(a[:3, :3])) < 1e-6 * float(np.prod(sizes)):
        raise DatasetFormatError(where, f"the voxel-to-world affine is singular (axes are parallel): {a.tolist()}")
    return tuple(float(s) for s in sizes)


@dataclass
class SliceLayout:
    """Where the slices of a series go.

    Attributes:
        order: indices into the input slices, sorted along the slice normal.
        origin: LPS position (mm) of the first output slice's voxel (0, 0).
        step: LPS vector (mm) from one output slice to the next (not always along the normal: gantry tilt).
        depths: sorted depths of the input slices along the normal.
        out_depths: depths of the output slices when the stack is resampled, else None.
    """

    order: list[int]
    origin: np.ndarray
    step: np.ndarray
    depths: np.ndarray
    out_depths: np.ndarray | None = None


def slice_layout(positions: np.ndarray, normal: np.ndarray, names: Sequence[str], where: str | Path,
                 uneven: UnevenPolicy = "error", tolerance: float = 0.01,
                 thickness: float | None = None) -> SliceLayout:
    """Order slices along ``normal`` and check that they form one uniform stack.

    Args:
        positions: ``[N, 3]`` ImagePositionPatient of each slice (LPS mm).
        normal: the unit slice normal (row direction x column direction).
        names: one name per slice (file, or file and frame), used in errors.
        where: the series (folder or file), named in errors.
        uneven: ``"error"`` refuses a missing slice or uneven spacing; ``"resample"`` puts the slices on a
            uniform grid at the median step (linear interpolation), with a warning.
        tolerance: a step may differ from the median step by this fraction.
        thickness: the step of a one-slice series (SpacingBetweenSlices or SliceThickness); 1 mm when None.

    Returns:
        The :class:`SliceLayout`.

    Raises:
        DatasetFormatError: duplicate positions, a gap or uneven steps (with ``uneven="error"``), or slices that
            do not lie on one line.
    """
    pos = np.asarray(positions, dtype=np.float64)
    normal = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
    depth = pos @ normal
    order = [int(i) for i in np.argsort(depth, kind="stable")]
    pos, depth = pos[order], depth[order]
    ordered = [names[i] for i in order]
    if len(order) == 1:
        return SliceLayout(order, pos[0], normal * float(thickness or 1.0), depth)
    steps = np.diff(depth)
    for k in np.flatnonzero(steps < _DUPLICATE_MM):
        raise DatasetFormatError(where, f"{ordered[k + 1]} has the same slice position as {ordered[k]} "
                                        f"(depth {depth[k]:.4f} mm): a duplicate file, or several echoes / time "
                                        f"points in one series, which cannot form one volume")
    median = float(np.median(steps))
    direction = (pos[-1] - pos[0]) / (depth[-1] - depth[0])  # LPS mm per mm of depth
    _check_collinear(pos, depth, direction, median * tolerance + _DUPLICATE_MM, ordered, where)
    bad = np.flatnonzero(np.abs(steps - median) > tolerance * median)
    if bad.size == 0:
        return SliceLayout(order, pos[0], (pos[-1] - pos[0]) / (len(order) - 1), depth)
    reason = _uneven_reason(steps, median, bad, ordered, depth, tolerance)
    if uneven != "resample":
        raise DatasetFormatError(where, f"{reason}; refusing a volume with wrong geometry (resample it onto "
                                        f"a uniform grid with --uneven-slices resample, or fix the series)")
    return _uniform_layout(order, pos[0], depth, median, direction, f"{where}: {reason}")


def _uniform_layout(order: list[int], origin: np.ndarray, depth: np.ndarray, median: float, direction: np.ndarray,
                    reason: str) -> SliceLayout:
    """A uniform grid at the median step from the first to the last slice (``direction``: LPS mm per mm depth)."""
    n_out = int(round((depth[-1] - depth[0]) / median)) + 1
    out_depths = np.linspace(depth[0], depth[-1], n_out)
    step = direction * (out_depths[1] - out_depths[0])
    log.warning("%s; resampled to %d slices %.4g mm apart (linear interpolation along the slice normal)",
                reason, n_out, float(np.linalg.norm(step)))
    return SliceLayout(order, origin, step, depth, out_depths)


def _check_collinear(pos: np.ndarray, depth: np.ndarray, direction: np.ndarray, tol: float,
                     names: Sequence[str], where: str | Path) -> None:
    expected = pos[0] + np.outer(depth - depth[0], direction)
    off = np.linalg.norm(pos - expected, axis=1)
    k = int(np.argmax(off))
    if off[k] > tol:
        raise DatasetFormatError(where, f"slice {names[k]} lies {off[k]:.4g} mm off the line through the first "
                                        f"and last slices ({names[0]}, {names[-1]}): the slices do not form one "
                                        f"stack (different table positions or a mixed series)")


def _uneven_reason(steps: np.ndarray, median: float, bad: np.ndarray, names: Sequence[str], depth: np.ndarray,
                   tolerance: float) -> str:
    k = int(bad[np.argmax(np.abs(steps[bad] - median))])
    ratio = steps[k] / median
    pair = f"{names[k]} (depth {depth[k]:.4g} mm) and {names[k + 1]} (depth {depth[k + 1]:.4g} mm)"
    if ratio > 1.5 and abs(ratio - round(ratio)) <= tolerance * round(ratio):
        missing = int(sum(round(steps[i] / median) - 1 for i in bad if steps[i] > median))
        return (f"{missing} slice(s) missing: {steps[k]:.4g} mm between {pair}, {round(ratio)} times the series' "
                f"{median:.4g} mm step")
    return (f"non-uniform slice spacing: steps range from {steps.min():.4g} to {steps.max():.4g} mm (median "
            f"{median:.4g} mm; {steps[k]:.4g} mm between {pair})")


def resample_slices(volume: np.ndarray, depths: np.ndarray, out_depths: np.ndarray) -> np.ndarray:
    """Linearly interpolate ``volume [..., N]`` (slices at sorted ``depths``) to ``[..., M]`` at ``out_depths``.

    Example:
        >>> v = np.stack([np.zeros((2, 2)), np.full((2, 2), 3.0)], axis=-1)
        >>> resample_slices(v, np.array([0.0, 3.0]), np.array([0.0, 1.0, 2.0, 3.0]))[0, 0].tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    upper = np.clip(np.searchsorted(depths, out_depths, side="right"), 1, len(depths) - 1)
    lower = upper - 1
    w = ((out_depths - depths[lower]) / (depths[upper] - depths[lower])).astype(volume.dtype)
    return volume[..., lower] * (1 - w) + volume[..., upper] * w


def dicom_affine(orientation: np.ndarray, pixel_spacing: Sequence[float], step: np.ndarray,
                 origin: np.ndarray) -> np.ndarray:
    """Voxel ``(i, j, k)`` -> RAS+ mm for an array indexed ``[column, row, slice]``.

    Args:
        orientation: ImageOrientationPatient (row direction, then column direction; LPS).
        pixel_spacing: PixelSpacing (row spacing = between rows, column spacing = between columns).
        step: LPS vector between consecutive slices.
        origin: LPS position of the first slice's first pixel.

    Returns:
        The 4x4 affine (LPS flipped to RAS: x and y negated, as nibabel and MONAI do).
    """
    o = np.asarray(orientation, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 0] = o[:3] * float(pixel_spacing[1])  # i runs along a row: column spacing
    lps[:3, 1] = o[3:] * float(pixel_spacing[0])  # j runs down a column: row spacing
    lps[:3, 2], lps[:3, 3] = step, origin
    return _LPS_TO_RAS @ lps


@dataclass
class Plane:
    """One DICOM slice (a file, or a frame of a multi-frame file) before its pixels are decoded.

    Attributes:
        name: the file name (plus the frame number for a frame), used in errors.
        file: the file it comes from.
        position: ImagePositionPatient (LPS mm).
        orientation: ImageOrientationPatient (row direction, column direction).
        pixel_spacing: PixelSpacing (row spacing, column spacing) mm.
        shape: (rows, columns).
        load: decodes the slice as float32 ``[rows, columns]``.
        thickness: SpacingBetweenSlices or SliceThickness, the step of a one-slice series.
    """

    name: str
    file: Path
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    load: Callable[[], np.ndarray]
    thickness: float | None = None


def stack_planes(planes: Sequence[Plane], where: str | Path, uneven: UnevenPolicy = "error",
                 tolerance: float = 0.01) -> tuple[np.ndarray, np.ndarray, list[Plane], bool]:
    """Check that planes form one stack, sort them, decode them and build ``[1, X, Y, Z]`` with its RAS+ affine.

    The geometry is checked (:func:`slice_layout`, :func:`check_voxel_geometry`) before any pixel is decoded.

    Returns:
        ``(volume, affine, planes in slice order, resampled)``.
    """
    first = planes[0]
    for p in planes:
        same = p.shape == first.shape and np.allclose(p.orientation, first.orientation, atol=1e-4) and \
            np.allclose(p.pixel_spacing, first.pixel_spacing, rtol=1e-4)
        if not same:
            raise DatasetFormatError(where, f"slice {p.name}: shape {p.shape} / orientation "
                                            f"{p.orientation.tolist()} / pixel spacing {p.pixel_spacing} differs "
                                            f"from {first.name} ({first.shape} / {first.orientation.tolist()} / "
                                            f"{first.pixel_spacing})")
    layout = slice_layout(np.stack([p.position for p in planes]), _normal(first, where), [p.name for p in planes],
                          where, uneven, tolerance, first.thickness)
    affine = dicom_affine(first.orientation, first.pixel_spacing, layout.step, layout.origin)
    n = len(planes) if layout.out_depths is None else len(layout.out_depths)
    check_voxel_geometry(affine, (first.shape[1], first.shape[0], n), where)
    vol = np.stack([planes[i].load() for i in layout.order], axis=-1)  # [rows, columns, Z]
    if layout.out_depths is not None:
        vol = resample_slices(vol, layout.depths, layout.out_depths)
    vol = np.ascontiguousarray(vol.transpose(1, 0, 2))[None]  # [1, X = columns, Y = rows, Z]
    return vol, affine, [planes[i] for i in layout.order], layout.out_depths is not None


def _normal(plane: Plane, where: Path) -> np.ndarray:
    """The slice normal (row direction x column direction), after checking the two are unit and at a right angle."""
    row, col = plane.orientation[:3], plane.orientation[3:]
    ok = plane.orientation.shape == (6,) and np.isfinite(plane.orientation).all() and \
        abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3 and abs(row @ col) < 1e-3
    if not ok:
        raise DatasetFormatError(where, f"ImageOrientationPatient {plane.orientation.tolist()} of {plane.name} is "
                                        f"not two unit vectors at a right angle")
    return np.cross(row, col)
