"""Image IO: NIfTI/PNG/DICOM readers and writers, load_record (crop boxes, series, masks), error messages."""

from __future__ import annotations

import gzip
import random

import nibabel as nib
import numpy as np
import pytest

from medzoo.data.imageio import read_image, write_dicom_series, write_nifti, write_png
from medzoo.data.manifest import DatasetFormatError, Record
from medzoo.data.record_io import load_record


def _rotated_affine() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.7, 0.9, 2.5])
    aff[:3, 3] = [-12.5, 30.0, 7.25]
    return aff


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
def test_nifti_affine_round_trip(tmp_path, name):
    vol = np.random.default_rng(0).integers(-1000, 1000, (5, 6, 7)).astype(np.int16)
    aff = _rotated_affine()
    write_nifti(tmp_path / name, vol, aff)
    arr, meta = read_image(tmp_path / name)
    assert arr.shape == (1, 5, 6, 7)
    assert arr.dtype == np.int16
    np.testing.assert_array_equal(arr[0], vol)
    np.testing.assert_allclose(meta["affine"], aff, atol=1e-5)
    np.testing.assert_allclose(meta["spacing"], [0.7, 0.9, 2.5], atol=1e-6)
    # independent check with nibabel directly
    img = nib.load(str(tmp_path / name))
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    assert img.header["sform_code"] == 1
    assert img.header["qform_code"] == 1


def test_nifti_gz_is_reproducible(tmp_path):
    vol = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    write_nifti(tmp_path / "a.nii.gz", vol, np.eye(4))
    first = (tmp_path / "a.nii.gz").read_bytes()
    write_nifti(tmp_path / "a.nii.gz", vol, np.eye(4))
    assert (tmp_path / "a.nii.gz").read_bytes() == first
    assert gzip.decompress(first)[:4] == (348).to_bytes(4, "little")  # NIfTI-1 header size


def test_nifti_4d_is_channel_first(tmp_path):
    vol = np.random.default_rng(1).random((4, 5, 6, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii"))
    arr, meta = read_image(tmp_path / "v.nii")
    assert arr.shape == (2, 4, 5, 6)
    assert meta["original_shape"] == (4, 5, 6, 2)
    np.testing.assert_array_equal(arr[1], vol[..., 1])


@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 16)])
def test_png_8_and_16_bit(tmp_path, dtype, bits):
    img = np.random.default_rng(2).integers(0, np.iinfo(dtype).max, (9, 13), endpoint=True).astype(dtype)
    write_png(tmp_path / "x.png", img)
    arr, meta = read_image(tmp_path / "x.png")
    assert arr.shape == (1, 9, 13)
    assert arr.dtype == dtype
    np.testing.assert_array_equal(arr[0], img)
    assert meta["bit_depth"] == bits
    assert meta["max_value"] == 2.0**bits - 1


def test_rgb_and_jpeg(tmp_path):
    from PIL import Image

    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    arr, _ = read_image(tmp_path / "c.png")
    assert arr.shape == (3, 6, 8)
    assert (arr[0] == 200).all()
    assert (arr[1] == 0).all()
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "g.jpg", quality=95)
    arr, meta = read_image(tmp_path / "g.jpg")
    assert arr.shape == (1, 16, 16)
    assert meta["bit_depth"] == 8
    assert np.abs(arr.astype(int) - 100).max() <= 2


def test_dicom_series_sorted_by_position(tmp_path):
    pytest.importorskip("pydicom")
    vol = np.random.default_rng(3).integers(-1000, 800, (6, 5, 7)).astype(np.int16)
    paths = write_dicom_series(tmp_path / "s", vol, spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0))
    # shuffle the file names so that name order says nothing about slice order
    names = [p.name for p in paths]
    random.Random(0).shuffle(names)
    assert names != [p.name for p in paths]
    tmp_names = [p.rename(p.with_name("tmp_" + p.name)) for p in paths]
    for p, n in zip(tmp_names, names):
        p.rename(p.with_name(n))
    arr, meta = read_image(tmp_path / "s")
    assert arr.shape == (1, 6, 5, 7)
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr[0], vol.astype(np.float32))  # RescaleIntercept -1024 applied
    expected = np.array([[-0.7, 0, 0, -10.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(meta["affine"], expected, atol=1e-6)
    np.testing.assert_allclose(meta["spacing"], (0.7, 0.8, 2.5))


def test_dicom_series_bad_slice_names_file(tmp_path):
    pytest.importorskip("pydicom")
    paths = write_dicom_series(tmp_path / "s", np.zeros((4, 4, 3), np.int16), spacing=(1, 1, 1))
    paths[1].write_bytes(paths[1].read_bytes()[:200])
    with pytest.raises(DatasetFormatError, match="IM0002.dcm"):
        read_image(tmp_path / "s")


def _nifti_bytes(tmp_path):
    write_nifti(tmp_path / "ok.nii.gz", np.random.default_rng(4).random((8, 8, 8)).astype(np.float32), np.eye(4))
    return (tmp_path / "ok.nii.gz").read_bytes()


@pytest.mark.parametrize("suffix", [".png", ".nii.gz", ".nii"])
def test_truncated_and_empty_files_name_the_file(tmp_path, suffix):
    if suffix == ".png":
        write_png(tmp_path / "ok.png", np.random.default_rng(5).integers(0, 255, (32, 32)).astype(np.uint8))
        data = (tmp_path / "ok.png").read_bytes()
    elif suffix == ".nii.gz":
        data = _nifti_bytes(tmp_path)
    else:
        data = gzip.decompress(_nifti_bytes(tmp_path))
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match=f"bad{suffix.replace('.', '[.]')}"):
        read_image(bad)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="empty.*0 bytes"):
        read_image(empty)


def test_missing_file_and_source_in_message(tmp_path):
    rec = Record("r1", "p1", str(tmp_path / "nope.png"), meta={"source": ("labels.txt", 7)})
    with pytest.raises(DatasetFormatError) as err:
        load_record(rec)
    msg = str(err.value)
    assert "nope.png" in msg
    assert "not found" in msg
    assert "labels.txt:7" in msg


def test_nonfinite_policy(tmp_path):
    vol = np.ones((3, 3, 3), np.float32)
    vol[1, 1, 1] = np.nan
    vol[0, 0, 0] = np.inf
    write_nifti(tmp_path / "n.nii", vol, np.eye(4))
    with pytest.raises(DatasetFormatError, match="2 NaN/Inf"):
        read_image(tmp_path / "n.nii")
    arr, _ = read_image(tmp_path / "n.nii", nonfinite="zero")
    assert arr[0, 1, 1, 1] == 0
    assert arr[0, 0, 0, 0] == 0
    assert arr.sum() == 25
    arr, _ = read_image(tmp_path / "n.nii", nonfinite="keep")
    assert np.isnan(arr[0, 1, 1, 1])


def test_masks_merged_and_shape_mismatch(tmp_path):
    write_png(tmp_path / "img.png", np.zeros((10, 12), np.uint8))
    left, right = np.zeros((10, 12), np.uint8), np.zeros((10, 12), np.uint8)
    left[2:8, 1:5], right[2:8, 7:11] = 255, 255
    write_png(tmp_path / "l.png", left)
    write_png(tmp_path / "r.png", right)
    rec = Record("a", "p", str(tmp_path / "img.png"), meta={"mask": [str(tmp_path / "l.png"), str(tmp_path / "r.png")]})
    mask = load_record(rec)["mask"]
    np.testing.assert_array_equal(mask[0], ((left > 0) | (right > 0)).astype(np.uint8))
    write_png(tmp_path / "small.png", np.zeros((9, 12), np.uint8))
    rec.meta["mask"] = str(tmp_path / "small.png")
    with pytest.raises(DatasetFormatError) as err:
        load_record(rec)
    assert "small.png" in str(err.value)
    assert "img.png" in str(err.value)
    assert "(9, 12)" in str(err.value)


def test_nifti_mask_keeps_label_values(tmp_path):
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[1, 1, 1], lab[2, 2, 2] = 1, 2
    write_nifti(tmp_path / "i.nii.gz", np.zeros((4, 4, 4), np.int16), np.eye(4))
    write_nifti(tmp_path / "l.nii.gz", lab, np.eye(4))
    s = load_record(Record("a", "p", str(tmp_path / "i.nii.gz"), meta={"mask": str(tmp_path / "l.nii.gz")}))
    assert s["image"].shape == (1, 4, 4, 4)
    assert sorted(np.unique(s["mask"])) == [0, 1, 2]
    np.testing.assert_allclose(s["meta"]["affine"], np.eye(4))


def test_crop_box_applied(tmp_path):
    img = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    write_png(tmp_path / "s.png", img)
    s = load_record(Record("s", "p", str(tmp_path / "s.png"), meta={"bbox": (4, 3, 25, 17)}))
    np.testing.assert_array_equal(s["image"][0], img[3:17, 4:25])  # x = column, y = row
    with pytest.raises(DatasetFormatError, match="does not fit"):
        load_record(Record("s", "p", str(tmp_path / "s.png"), meta={"bbox": (4, 3, 31, 17)}))


def test_series_crop_resize_stack(tmp_path):
    paths, boxes = [], []
    for i, (h, w) in enumerate([(20, 24), (30, 28), (16, 16)]):
        img = np.full((h, w), 255, np.uint8)
        box = (2, 3, w - 2, h - 1)
        img[box[1]:box[3], box[0]:box[2]] = 10 * (i + 1)
        write_png(tmp_path / f"NCP_1_2_{i:04d}.png", img)
        paths.append(str(tmp_path / f"NCP_1_2_{i:04d}.png"))
        boxes.append(box)
    rec = Record("NCP_1_2", "NCP_1", paths, meta={"bboxes": boxes})
    s = load_record(rec, slice_size=(8, 12))
    assert s["image"].shape == (3, 1, 8, 12)
    assert s["meta"]["series"] is True
    for i in range(3):  # inside the crop box each slice is constant, so resizing keeps the value exactly
        np.testing.assert_allclose(s["image"][i], 10 * (i + 1), atol=1e-4)
    with pytest.raises(DatasetFormatError, match="slice_size"):
        load_record(rec)


def _raw_nifti(path, shape, affine=None, zooms=(1.0, 1.0, 1.0)):
    """A NIfTI written with nibabel directly: ``affine`` as the sform (code 1, qform code 0), or with no sform
    and qform at all (codes 0), so that readers fall back to ``zooms`` (pixdim)."""
    img = nib.Nifti1Image(np.zeros(shape, np.int16), None)
    img.header.set_zooms(zooms)
    img.set_qform(None, code=0)
    img.set_sform(affine, code=0 if affine is None else 1)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize(("case", "affine", "zooms", "message"), [
    ("pixdim 1e-6, no sform/qform", None, (1e-6, 1e-6, 1e-6), "voxel spacing 1e-06 mm along axis 0"),
    ("pixdim 100, no sform/qform", None, (100.0, 100.0, 100.0), "voxel spacing 100 mm along axis 0"),
    ("sform spacing 100", np.diag([100.0, 100.0, 100.0, 1.0]), (1.0, 1.0, 1.0), "voxel spacing 100 mm along axis 0"),
    ("zero z column", np.diag([1.0, 1.0, 0.0, 1.0]), (1.0, 1.0, 1.0), "voxel spacing 0 mm along axis 2"),
    ("NaN in the sform", np.array([[1, 0, 0, np.nan], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), (1.0, 1.0, 1.0),
     "not a finite 4x4 matrix"),
    ("parallel axes", np.array([[1, 0, 0, 0], [0, 0.6, 0.6, 0], [0, 0.8, 0.8, 0], [0, 0, 0, 1.0]]), (1.0, 1.0, 1.0),
     "singular"),
    ("4 m field of view", np.diag([1.0, 1.0, 40.0, 1.0]), (1.0, 1.0, 1.0), "field of view 4000 mm"),
])
def test_absurd_nifti_geometry_is_refused_naming_the_file(tmp_path, case, affine, zooms, message):
    p = _raw_nifti(tmp_path / "bad.nii", (4, 4, 100), affine, zooms)
    with pytest.raises(DatasetFormatError, match=message) as info:
        read_image(p)
    assert info.value.path == str(p)


def test_plausible_anisotropic_nifti_reads(tmp_path):
    """The limits leave real scans alone: 0.3 mm in-plane, 10 mm slices, a 1.8 m whole-body field of view."""
    p = _raw_nifti(tmp_path / "ok.nii", (4, 4, 180), np.diag([0.3, 0.3, 10.0, 1.0]), zooms=(0.3, 0.3, 10.0))
    assert read_image(p)[1]["spacing"] == pytest.approx((0.3, 0.3, 10.0))


def test_spacing_comes_from_the_affine_that_is_used(tmp_path):
    """pixdim 1 but an sform of 0.5 mm: nibabel's affine (sform first) rules, and the reported spacing agrees."""
    p = _raw_nifti(tmp_path / "sform.nii", (4, 4, 4), np.diag([0.5, 0.5, 0.5, 1.0]), zooms=(1.0, 1.0, 1.0))
    arr, meta = read_image(p)
    np.testing.assert_allclose(meta["affine"], nib.load(str(p)).affine)
    assert meta["spacing"] == pytest.approx((0.5, 0.5, 0.5))
