"""Bad image files: truncated, zero-byte and bit-flipped PNG, JPEG, NIfTI and DICOM; NaN/Inf voxels; empty series;
absurd shapes; unexpected channel counts.

Documented handling, each tested here:

- A cut or zero-byte file raises :class:`DatasetFormatError` naming it. The one exception is a PNG cut after its
  compressed pixel data is complete (in the last chunk's CRC or the IEND trailer): Pillow reads it as the complete,
  identical image, which is checked. (A ``.nii.gz`` is decompressed whole, so a cut gzip trailer is an error too.)
- A flipped bit in a file with a checksum (PNG chunk CRCs and zlib, the ``.nii.gz`` gzip CRC-32) is an error or, when
  it hits bytes the checksum does not cover, gives the identical image. JPEG, raw ``.nii`` and DICOM carry no
  checksum: a flipped bit there reads as whatever the file now says, or a DatasetFormatError; never another type.
- NaN/Inf voxels: error by default, ``nonfinite="zero"`` replaces them with 0, ``"keep"`` keeps them.
- RGBA drops alpha and RGB / LA are read as 3 / 1 channels; the CXR preset averages RGB to one gray channel.
  A 4-D NIfTI keeps its C channels through the CT preset (the model's ``in_channels`` decides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medzoo.data.dataset import ManifestDataset
from medzoo.data.imageio import read_image, write_nifti, write_png
from medzoo.data.manifest import DatasetFormatError, Record
from medzoo.data.record_io import load_record
from medzoo.data.transforms import ct_preset, cxr_preset
from tests.robustness.tally import case, outcome

CATEGORY = "images"
CHECKSUMMED = {"png", "nii.gz"}


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, np.ndarray]]:
    """name -> (file bytes, array read from the intact file) for one small image of each format."""
    from PIL import Image

    from medzoo.data._dicom_write import write_dicom_image

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    write_png(d / "a.png", rng.integers(0, 255, (24, 24), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(d / "a.jpg", quality=90)
    vol = (rng.normal(size=(12, 12, 6)) * 100).astype(np.int16)
    write_nifti(d / "a.nii.gz", vol, np.diag([1.5, 1.5, 2.0, 1.0]))
    write_nifti(d / "a.nii", vol, np.diag([1.5, 1.5, 2.0, 1.0]))
    write_dicom_image(d / "a.dcm", rng.integers(0, 4000, (24, 24)).astype(np.uint16), "robust")
    return {p.name.split(".", 1)[1]: (p.read_bytes(), read_image(p)[0]) for p in sorted(d.iterdir())}


def _read_or_error(path: Path) -> np.ndarray | None:
    """The array, or None after checking that the error is a DatasetFormatError naming ``path``."""
    try:
        return read_image(path)[0]
    except DatasetFormatError as err:
        assert err.path == str(path) and str(path) in str(err), err
        return None


@pytest.mark.parametrize("fmt", ["png", "jpg", "nii.gz", "nii", "dcm"])
@given(frac=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_file(fmt: str, frac: float, originals: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    data, full = originals[fmt]
    cut = int(frac * len(data))
    path = tmp_path_factory.mktemp("cut") / f"cut.{fmt}"
    path.write_bytes(data[:cut])
    with case(CATEGORY, f"truncated / zero-byte {fmt}"):
        arr = _read_or_error(path)
        outcome(CATEGORY, f"truncated / zero-byte {fmt}", "DatasetFormatError" if arr is None else "read")
        if arr is not None:  # only a PNG whose compressed pixels are complete may read, and then exactly
            assert fmt == "png", f"{fmt} cut at {cut}/{len(data)} read without error"
            np.testing.assert_array_equal(arr, full, err_msg=f"PNG cut at {cut}/{len(data)} read different pixels")


@pytest.mark.parametrize("fmt", ["png", "jpg", "nii.gz", "nii", "dcm"])
@given(where=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_flipped_bit(fmt: str, where: float, bit: int, originals: dict,
                     tmp_path_factory: pytest.TempPathFactory) -> None:
    data, full = originals[fmt]
    b = bytearray(data)
    b[int(where * len(b))] ^= 1 << bit
    path = tmp_path_factory.mktemp("flip") / f"flip.{fmt}"
    path.write_bytes(bytes(b))
    with case(CATEGORY, f"one flipped bit in {fmt}"):
        arr = _read_or_error(path)
        same = arr is not None and arr.shape == full.shape and np.array_equal(arr, full)
        outcome(CATEGORY, f"one flipped bit in {fmt}", "DatasetFormatError" if arr is None else
                "read, identical" if same else "read, different")
        if arr is not None and fmt in CHECKSUMMED:
            np.testing.assert_array_equal(arr, full, err_msg=f"{fmt}: corrupted data read silently")


def test_flipped_nii_gz_regression(originals: dict, tmp_path: Path) -> None:
    """Regression: nibabel never reached the gzip CRC, so a flipped data bit gave different voxels silently."""
    data, _ = originals["nii.gz"]
    b = bytearray(data)
    b[len(b) // 2] ^= 0x10
    (tmp_path / "x.nii.gz").write_bytes(bytes(b))
    with case(CATEGORY, "one flipped bit in nii.gz"):
        with pytest.raises(DatasetFormatError, match="cannot read NIfTI"):
            read_image(tmp_path / "x.nii.gz")


def test_corrupt_dicom_tag_regression(tmp_path: Path) -> None:
    """Regression: a corrupt PixelSpacing value raised a bare ValueError after the pixels decoded."""
    from medzoo.data._dicom_write import write_dicom_image

    p = write_dicom_image(tmp_path / "a.dcm", np.zeros((8, 8), np.uint16), "tag")
    data = p.read_bytes()
    i = data.index(b"0.139")
    p.write_bytes(data[:i] + b"0.1\xe3x" + data[i + 5:])
    with case(CATEGORY, "one flipped bit in dcm"):
        with pytest.raises(DatasetFormatError, match="corrupt DICOM tag"):
            read_image(p)


def test_dicom_series_with_a_cut_slice(tmp_path: Path) -> None:
    from medzoo.data._dicom_write import write_dicom_series

    paths = write_dicom_series(tmp_path / "series", np.zeros((8, 8, 4)), (1.0, 1.0, 2.0))
    paths[2].write_bytes(paths[2].read_bytes()[:200])
    with case(CATEGORY, "DICOM series: one cut slice, empty folder, empty slice list"):
        with pytest.raises(DatasetFormatError) as info:
            read_image(tmp_path / "series")
        assert info.value.path == str(paths[2])


def test_zero_slice_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write_nifti(tmp_path / "z.nii.gz", np.zeros((4, 4, 0), np.int16), np.eye(4))
    with case(CATEGORY, "DICOM series: one cut slice, empty folder, empty slice list"):
        with pytest.raises(DatasetFormatError, match="no files"):
            read_image(tmp_path / "empty")
        with pytest.raises(DatasetFormatError, match="no slices"):
            load_record(Record("s", "p", [], meta={"source": ("list.txt", 3)}))
    with case(CATEGORY, "0-slice NIfTI"):
        with pytest.raises(DatasetFormatError) as info:
            read_image(tmp_path / "z.nii.gz")
        assert info.value.path == str(tmp_path / "z.nii.gz")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_voxels(bad: float, tmp_path: Path) -> None:
    vol = np.ones((6, 6, 4), np.float32)
    vol[1, 2, 3] = bad
    path = write_nifti(tmp_path / "nan.nii.gz", vol, np.eye(4))
    with case(CATEGORY, "NaN / +Inf / -Inf voxels (error, zero, keep)"):
        with pytest.raises(DatasetFormatError, match="1 NaN/Inf voxel"):
            read_image(path)
        rec = Record("v", "p", str(path), meta={"source": ("m.csv", 7)})
        with pytest.raises(DatasetFormatError, match=r"m\.csv:7"):
            ManifestDataset([rec])[0]
        zeroed = read_image(path, nonfinite="zero")[0]
        assert zeroed[0, 1, 2, 3] == 0 and np.isfinite(zeroed).all() and zeroed.sum() == vol.size - 1
        kept = read_image(path, nonfinite="keep")[0]
        assert np.isnan(kept[0, 1, 2, 3]) if np.isnan(bad) else kept[0, 1, 2, 3] == bad


@pytest.mark.parametrize("shape", [(1, 1, 1), (2048, 2048, 1), (1, 64, 3)])
def test_absurd_volume_shapes(shape: tuple[int, int, int], tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "v.nii.gz", np.full(shape, 40, np.int16), np.eye(4))
    ds = ManifestDataset([Record("v", "p", str(path))], transform=ct_preset(False, patch=(16, 16, 16)))
    with case(CATEGORY, "absurd volume shapes 1x1x1, 2048x2048x1, 1x64x3 through the CT preset"):
        image = ds[0]["image"]
        assert tuple(image.shape) == (1, 16, 16, 16) and bool(np.isfinite(image.numpy()).all())


@pytest.mark.parametrize("shape", [(1, 1), (2048, 2048), (1, 300), (300, 1)])
def test_absurd_image_shapes(shape: tuple[int, int], tmp_path: Path) -> None:
    path = write_png(tmp_path / "i.png", np.full(shape, 200, np.uint8))
    ds = ManifestDataset([Record("i", "p", str(path))], transform=cxr_preset(False, size=32))
    with case(CATEGORY, "absurd image shapes 1x1, 2048x2048, 1x300, 300x1 through the CXR preset"):
        image = ds[0]["image"]
        assert tuple(image.shape) == (1, 32, 32)
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


@pytest.mark.parametrize("mode,channels", [("RGBA", 4), ("RGB", 3), ("LA", 2), ("I;16", 1), ("1", 1)])
def test_png_channel_counts(mode: str, channels: int, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    shape = (20, 20, channels) if channels > 1 else (20, 20)
    dtype = np.uint16 if mode == "I;16" else np.uint8
    arr = rng.integers(0, 2 if mode == "1" else 200, shape).astype(dtype)
    img = Image.fromarray(arr.astype(bool) if mode == "1" else arr)  # uint16 -> I;16, 2/3/4 channels -> LA/RGB/RGBA
    assert img.mode == mode
    img.save(tmp_path / "c.png")
    with case(CATEGORY, "PNG channel counts RGBA/RGB/LA/I;16/1-bit"):
        raw, meta = read_image(tmp_path / "c.png")
        assert raw.shape[0] == (3 if channels >= 3 else 1) and raw.shape[1:] == (20, 20)
        if mode in ("RGB", "RGBA"):
            np.testing.assert_array_equal(raw, np.moveaxis(arr[..., :3], -1, 0))  # alpha dropped, colours exact
        out = cxr_preset(False, size=16)(load_record(Record("c", "p", str(tmp_path / "c.png"))))
        assert tuple(out["image"].shape) == (1, 16, 16)


def test_multichannel_nifti_keeps_channels(tmp_path: Path) -> None:
    vol = np.stack([np.full((8, 8, 8), v, np.float32) for v in (-1000, 0, 400)], axis=-1)
    path = write_nifti(tmp_path / "c3.nii.gz", vol, np.eye(4))
    with case(CATEGORY, "4-D NIfTI with 3 channels through the CT preset"):
        out = ct_preset(False, patch=(8, 8, 8))(load_record(Record("c", "p", str(path))))
        image = np.asarray(out["image"])
        assert image.shape == (3, 8, 8, 8)
        np.testing.assert_allclose(image[:, 4, 4, 4], [0.0, 1000 / 1400, 1.0], atol=1e-6)
