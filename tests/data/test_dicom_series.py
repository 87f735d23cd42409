"""DICOM reading on real pydicom-built files: series grouping, patients, slice geometry, MONOCHROME1, rescale,
extension-less files, single radiographs and multi-frame files.

Affines are checked against DICOM PS3.3 C.7.6.2.1.1 written out in ``dicom_fixtures`` (and against MONAI's
``PydicomReader``): every voxel must sit at the world position of the file pixel it holds.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from medzoo.data._dicom import DicomOptions
from medzoo.data.imageio import read_image
from medzoo.data.manifest import DatasetFormatError
from medzoo.infer.inputs import classify_path
from tests.data.dicom_fixtures import (
    AXIAL,
    BITS,
    lps_to_ras,
    stack_positions,
    standard_lps_affine,
    uid,
    world_of_pixel,
    write_ct_series,
    write_ct_slice,
    write_enhanced_ct,
    write_radiograph,
)

SPACING = (0.8, 0.7)  # (row spacing, column spacing), as DICOM's PixelSpacing orders them


def _stored(n: int, rows: int = 6, cols: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**BITS, (n, rows, cols)).astype(np.uint16)


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    a, b = np.deg2rad(yaw), np.deg2rad(pitch)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rx @ rz


OBLIQUE = tuple((_rotation(30, 20)[:, 0]).tolist() + (_rotation(30, 20)[:, 1]).tolist())
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
GEOMETRIES = {
    "axial": {"orientation": AXIAL, "step": 2.0},
    "oblique, descending positions": {"orientation": OBLIQUE, "step": -2.5},
    "sagittal": {"orientation": SAGITTAL, "step": 1.25},
    "gantry tilt": {"orientation": AXIAL, "step": 2.0, "shift": (0.0, 0.6, 0.0)},
}


def _shuffled_names(n: int, seed: int = 0) -> list[str]:
    names = [f"IM{k + 1:04d}.dcm" for k in range(n)]
    random.Random(seed).shuffle(names)
    return names


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_every_voxel_sits_at_its_files_pixel(tmp_path: Path, geometry: str) -> None:
    g = GEOMETRIES[geometry]
    pos = stack_positions(5, orientation=g["orientation"], step=g["step"], shift=g.get("shift", (0, 0, 0)))
    stored = _stored(5)
    names = _shuffled_names(5)  # file names say nothing about slice order
    write_ct_series(tmp_path / "s", stored, pos, names=names, orientation=g["orientation"], pixel_spacing=SPACING)
    vol, meta = read_image(tmp_path / "s")
    inv = np.linalg.inv(meta["affine"])
    for k in range(5):
        corner = world_of_pixel(pos[k], g["orientation"], SPACING, 0, 0)
        z = (inv @ np.append(corner, 1.0))[:3]  # where the affine puts this file's first pixel
        np.testing.assert_allclose(z[:2], [0, 0], atol=1e-6)
        zi = int(round(z[2]))
        assert abs(z[2] - zi) < 1e-6
        far = world_of_pixel(pos[k], g["orientation"], SPACING, 4, 5)  # column 4, row 5
        np.testing.assert_allclose((meta["affine"] @ [4, 5, zi, 1])[:3], far, atol=1e-6)
        np.testing.assert_array_equal(vol[0, :, :, zi], stored[k].T.astype(np.float32) - 1024)
    assert meta["slice_files"] == [str(tmp_path / "s" / names[k]) for k in np.argsort(pos @ _normal(g))]


def _normal(g: dict) -> np.ndarray:
    o = np.asarray(g["orientation"])
    return np.cross(o[:3], o[3:])


@pytest.mark.parametrize("geometry", ["axial", "oblique, descending positions", "gantry tilt"])
def test_affine_is_the_standards_stack_affine(tmp_path: Path, geometry: str) -> None:
    g = GEOMETRIES[geometry]
    pos = stack_positions(6, orientation=g["orientation"], step=g["step"], shift=g.get("shift", (0, 0, 0)))
    write_ct_series(tmp_path / "s", _stored(6), pos, orientation=g["orientation"], pixel_spacing=SPACING)
    order = np.argsort(pos @ _normal(g))
    expected = lps_to_ras(standard_lps_affine(g["orientation"], SPACING, pos[order[0]], pos[order[-1]], 6))
    np.testing.assert_allclose(read_image(tmp_path / "s")[1]["affine"], expected, atol=1e-6)


def test_same_voxels_and_world_positions_as_monai_pydicomreader(tmp_path: Path) -> None:
    from monai.data import PydicomReader

    pos = stack_positions(5, orientation=OBLIQUE, step=-2.5)
    write_ct_series(tmp_path / "s", _stored(5), pos, orientation=OBLIQUE, pixel_spacing=SPACING)
    vol, meta = read_image(tmp_path / "s")
    reader = PydicomReader()
    data, mmeta = reader.get_data(reader.read(str(tmp_path / "s")))
    # MONAI may stack the slices the other way up; the voxel -> world mapping must be the same either way
    if not np.allclose(mmeta["affine"][:3, 3], meta["affine"][:3, 3]):
        flip = np.eye(4)
        flip[2, 2], flip[2, 3] = -1.0, data.shape[2] - 1
        mmeta_affine, data = np.asarray(mmeta["affine"]) @ flip, np.asarray(data)[:, :, ::-1]
    else:
        mmeta_affine = np.asarray(mmeta["affine"])
    np.testing.assert_allclose(meta["affine"], mmeta_affine, atol=1e-5)
    np.testing.assert_array_equal(vol[0], np.asarray(data, dtype=np.float32))


def _two_series(folder: Path) -> tuple[str, str, np.ndarray, np.ndarray]:
    a, b = _stored(4, seed=1), _stored(5, seed=2)
    uid_a, uid_b = uid("arterial"), uid("venous")
    write_ct_series(folder, a, stack_positions(4, step=2.0), names=[f"A{k}.dcm" for k in range(4)],
                    series_uid=uid_a, series_number=2, description="arterial")
    write_ct_series(folder, b, stack_positions(5, step=2.0, origin=(-40, -35, 101)),
                    names=[f"B{k}.dcm" for k in range(5)], series_uid=uid_b, series_number=3, description="venous")
    return uid_a, uid_b, a, b


def test_two_series_in_one_folder_are_refused_with_a_listing(tmp_path: Path) -> None:
    uid_a, uid_b, _, _ = _two_series(tmp_path / "mixed")
    with pytest.raises(DatasetFormatError, match="holds 2 DICOM series") as info:
        read_image(tmp_path / "mixed")
    msg = str(info.value)
    assert f"{uid_a}  (SeriesNumber 2, CT, 'arterial', 4 file(s)" in msg
    assert f"{uid_b}  (SeriesNumber 3, CT, 'venous', 5 file(s)" in msg
    assert "--series" in msg


def test_series_picked_by_uid_or_number(tmp_path: Path) -> None:
    uid_a, uid_b, a, b = _two_series(tmp_path / "mixed")
    vol_b, meta_b = read_image(tmp_path / "mixed", dicom=DicomOptions(series=uid_b))
    np.testing.assert_array_equal(vol_b[0], b.transpose(2, 1, 0).astype(np.float32) - 1024)
    assert meta_b["series_uid"] == uid_b
    vol_a, _ = read_image(tmp_path / "mixed", dicom=DicomOptions(series="2"))
    np.testing.assert_array_equal(vol_a[0], a.transpose(2, 1, 0).astype(np.float32) - 1024)
    with pytest.raises(DatasetFormatError, match="matches no series"):
        read_image(tmp_path / "mixed", dicom=DicomOptions(series="7"))


def _gap_series(folder: Path, n: int = 8, missing: int = 3) -> tuple[np.ndarray, np.ndarray]:
    stored, pos = _stored(n, seed=4), stack_positions(n, step=2.0)
    paths = write_ct_series(folder, stored, pos)
    paths[missing].unlink()
    return stored, pos


def test_missing_slice_is_refused_naming_its_neighbours(tmp_path: Path) -> None:
    _gap_series(tmp_path / "gap")
    with pytest.raises(DatasetFormatError, match=r"1 slice\(s\) missing") as info:
        read_image(tmp_path / "gap")
    assert "IM0003.dcm" in str(info.value)
    assert "IM0005.dcm" in str(info.value)


def test_missing_slice_resampled_on_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stored, pos = _gap_series(tmp_path / "gap")
    with caplog.at_level(logging.WARNING):
        vol, meta = read_image(tmp_path / "gap", dicom=DicomOptions(uneven="resample"))
    assert "resampled to 8 slices" in caplog.text
    hu = stored.transpose(2, 1, 0).astype(np.float32) - 1024
    np.testing.assert_allclose(vol[0, :, :, 3], (hu[:, :, 2] + hu[:, :, 4]) / 2, atol=1e-4)  # the gap: linear
    kept = [0, 1, 2, 4, 5, 6, 7]
    np.testing.assert_array_equal(vol[0][..., kept], hu[..., kept])
    expected = lps_to_ras(standard_lps_affine(AXIAL, SPACING, pos[0], pos[-1], 8))
    np.testing.assert_allclose(meta["affine"], expected, atol=1e-6)
    assert meta["resampled"] is True


def _uneven(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    depths = np.array([0.0, 1.0, 2.0, 3.5, 5.0, 6.0])
    pos = np.array([[-40.0, -35.0, 100.0 + d] for d in depths])
    stored = _stored(6, seed=5)
    write_ct_series(folder, stored, pos)
    return stored, depths


def test_uneven_spacing_is_refused(tmp_path: Path) -> None:
    _uneven(tmp_path / "uneven")
    with pytest.raises(DatasetFormatError, match="non-uniform slice spacing: steps range from 1 to 1.5 mm"):
        read_image(tmp_path / "uneven")


def test_uneven_spacing_resampled_by_linear_interpolation(tmp_path: Path) -> None:
    stored, depths = _uneven(tmp_path / "uneven")
    vol, meta = read_image(tmp_path / "uneven", dicom=DicomOptions(uneven="resample"))
    hu = stored.astype(np.float64) - 1024  # [slice, row, column]
    out_depths = np.arange(7.0)  # median step 1 mm from 0 to 6 mm
    expected = np.stack([[np.interp(out_depths, depths, hu[:, r, c]) for r in range(6)] for c in range(5)])
    np.testing.assert_allclose(vol[0], expected, atol=1e-3)
    np.testing.assert_allclose(meta["affine"][:3, 2], [0, 0, 1.0], atol=1e-9)


def test_slice_off_the_stack_line_is_refused(tmp_path: Path) -> None:
    pos = stack_positions(5, step=2.0)
    pos[2] += [0.0, 7.0, 0.0]  # one slice from another table position
    write_ct_series(tmp_path / "s", _stored(5), pos)
    with pytest.raises(DatasetFormatError, match="IM0003.dcm lies 7 mm off the line"):
        read_image(tmp_path / "s")


def test_duplicate_position_is_refused(tmp_path: Path) -> None:
    pos = stack_positions(4, step=2.0)
    pos[3] = pos[2]
    write_ct_series(tmp_path / "s", _stored(4), pos)
    with pytest.raises(DatasetFormatError, match="has the same slice position as"):
        read_image(tmp_path / "s")


def test_another_patients_slice_is_refused(tmp_path: Path) -> None:
    series_uid = uid("one series")
    write_ct_series(tmp_path / "s", _stored(5), stack_positions(5), series_uid=series_uid)
    write_ct_slice(tmp_path / "s" / "intruder.dcm", _stored(1)[0], stack_positions(6)[5], series_uid=series_uid,
                   patient_id="PAT-2", instance=6)
    with pytest.raises(DatasetFormatError, match="mixes several patients") as info:
        read_image(tmp_path / "s")
    assert "PatientID 'PAT-2': intruder.dcm (1 file(s))" in str(info.value)
    assert "PatientID 'PAT-1'" in str(info.value)


def test_monochrome1_series_is_inverted_like_single_images(tmp_path: Path) -> None:
    stored, pos = _stored(4, seed=6), stack_positions(4)
    paths = write_ct_series(tmp_path / "m1", stored, pos, photometric="MONOCHROME1", slope=2.0, intercept=-1000.0)
    vol, _ = read_image(tmp_path / "m1")
    expected = (2**BITS - 1 - stored.astype(np.float64)) * 2.0 - 1000.0  # lowest + highest stored value - v
    np.testing.assert_array_equal(vol[0], expected.transpose(2, 1, 0).astype(np.float32))
    single, _ = read_image(paths[1])  # the single-image path
    np.testing.assert_array_equal(vol[0, :, :, 1], single[0].T)


def test_rescale_applied_per_slice(tmp_path: Path) -> None:
    stored, pos = _stored(3, seed=7), stack_positions(3)
    rescale = [(1.0, -1024.0), (0.5, -1000.0), (2.0, 0.0)]
    for k, (slope, icpt) in enumerate(rescale):
        write_ct_slice(tmp_path / "s" / f"{k}.dcm", stored[k], pos[k], series_uid=uid("rescale"), slope=slope,
                       intercept=icpt, instance=k + 1)
    vol, _ = read_image(tmp_path / "s")
    for k, (slope, icpt) in enumerate(rescale):
        np.testing.assert_array_equal(vol[0, :, :, k], stored[k].T.astype(np.float32) * slope + icpt)


def test_extensionless_files_read_like_named_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stored, pos = _stored(4, seed=8), stack_positions(4)
    write_ct_series(tmp_path / "named", stored, pos, series_uid=uid("x"))
    write_ct_series(tmp_path / "bare", stored, pos, names=[f"1.2.840.99.{k}" for k in range(4)], series_uid=uid("x"))
    (tmp_path / "bare" / "README.txt").write_text("exported by a PACS\n")
    named, m1 = read_image(tmp_path / "named")
    with caplog.at_level(logging.WARNING):
        bare, m2 = read_image(tmp_path / "bare")
    np.testing.assert_array_equal(bare, named)
    np.testing.assert_allclose(m2["affine"], m1["affine"])
    assert "ignoring 1 non-DICOM file(s): README.txt" in caplog.text
    assert classify_path(tmp_path / "bare").kind == "volume"


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("name", ["cxr.dcm", "1.2.276.0.7230010.3.1.4"])
def test_single_radiograph_file(tmp_path: Path, photometric: str, name: str) -> None:
    raw = _stored(1, rows=12, cols=10, seed=9)[0]
    p = write_radiograph(tmp_path / name, raw, modality="CR", photometric=photometric)
    arr, meta = read_image(p)
    bright_dense = (2**BITS - 1 - raw) if photometric == "MONOCHROME1" else raw
    np.testing.assert_array_equal(arr[0], bright_dense.astype(np.float32))
    assert meta["max_value"] == 2**BITS - 1
    assert classify_path(p).kind == "image"


def test_folder_of_radiographs_is_refused_with_advice(tmp_path: Path) -> None:
    write_radiograph(tmp_path / "siim" / "a.dcm", _stored(1, seed=10)[0], modality="DX")
    with pytest.raises(DatasetFormatError, match="projection radiograph.*pass each file"):
        read_image(tmp_path / "siim")


def test_one_ct_slice_file_is_refused_as_an_input(tmp_path: Path) -> None:
    p = write_ct_slice(tmp_path / "one.dcm", _stored(1)[0], (0, 0, 0), series_uid=uid("single"))
    with pytest.raises(DatasetFormatError, match="one slice of a CT series; pass the folder"):
        classify_path(p)


def test_enhanced_multiframe_equals_its_slice_series(tmp_path: Path) -> None:
    stored, pos = _stored(5, seed=11), stack_positions(5, orientation=OBLIQUE, step=1.5)
    frames = [3, 0, 4, 1, 2]  # frames stored out of position order
    slopes = [1.0, 0.5, 2.0, 1.0, 0.25]
    mf = write_enhanced_ct(tmp_path / "mf.dcm", stored[frames], pos[frames], orientation=OBLIQUE,
                           pixel_spacing=SPACING, slopes=[slopes[f] for f in frames])
    for k in range(5):
        write_ct_slice(tmp_path / "s" / f"{k}.dcm", stored[k], pos[k], series_uid=uid("mf"), orientation=OBLIQUE,
                       pixel_spacing=SPACING, slope=slopes[k], instance=k + 1)
    vol, meta = read_image(mf)
    ref, ref_meta = read_image(tmp_path / "s")
    np.testing.assert_array_equal(vol, ref)
    np.testing.assert_allclose(meta["affine"], ref_meta["affine"], atol=1e-6)
    assert classify_path(mf).kind == "volume"


def test_multiframe_without_per_frame_geometry_is_refused(tmp_path: Path) -> None:
    mf = write_enhanced_ct(tmp_path / "mf.dcm", _stored(3), stack_positions(3), per_frame_geometry=False)
    with pytest.raises(DatasetFormatError, match=r"multi-frame DICOM \(3 frames\) without per-frame geometry"):
        read_image(mf)


@pytest.mark.parametrize(("spacing", "step"), [((0.0, 0.7), 2.0), ((0.8, 0.7), 60.0), ((0.8, 1e-5), 2.0)])
def test_absurd_dicom_spacing_is_refused(tmp_path: Path, spacing: tuple[float, float], step: float) -> None:
    write_ct_series(tmp_path / "s", _stored(3), stack_positions(3, step=step), pixel_spacing=spacing)
    with pytest.raises(DatasetFormatError, match="voxel spacing .* is not plausible") as info:
        read_image(tmp_path / "s")
    assert info.value.path == str(tmp_path / "s")
