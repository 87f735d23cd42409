"""``medzoo predict`` / ``explain`` / ``align`` on pydicom-built DICOM: every written mask carries the series'
true geometry (checked against the affine of DICOM PS3.3 C.7.6.2.1.1 computed here from the tags), bad series
are refused with a message that says why, and single radiographs (CR/DX, with or without extension) work.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medzoo.cli.main import main
from medzoo.data.imageio import write_png
from tests.data.dicom_fixtures import (
    AXIAL,
    BITS,
    lps_to_ras,
    stack_positions,
    standard_lps_affine,
    uid,
    write_ct_series,
    write_ct_slice,
    write_radiograph,
)
from tests.helpers import write_tiny_export

SPACING = (0.8, 0.7)
ROWS, COLS = 14, 12
OBLIQUE = (0.8660254, 0.5, 0.0, -0.4698463, 0.8137977, 0.3420201)  # 30 degrees about z, then 20 about x
SEG_PRE = {"modality": ["CT"], "normalisation": "window", "intensity_window": [-1024, 3071], "orientation": "RAS"}


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    tasks = {"seg": {"type": "segmentation", "level": "volume", "num_classes": 2}}
    return write_tiny_export(tmp_path_factory.mktemp("seg"), "seg", tasks, 3, SEG_PRE)


@pytest.fixture(scope="module")
def cxr_model(cxr_exports: tuple[str, str]) -> str:
    return cxr_exports[0]


def _stored(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**BITS, (n, ROWS, COLS)).astype(np.uint16)


def _predict(model: str, *args: str) -> int:
    return main(["-q", "predict", "--model", model, *args])


def _mask(out: Path, name: str) -> nib.Nifti1Image:
    return nib.load(str(out / "masks" / f"{name}_seg.nii.gz"))


def _expected_affine(orientation, first, last, n: int) -> np.ndarray:
    return lps_to_ras(standard_lps_affine(orientation, SPACING, first, last, n))


def test_oblique_series_mask_has_the_series_geometry(seg_model: str, tmp_path: Path) -> None:
    pos = stack_positions(6, orientation=OBLIQUE, step=-1.5)  # positions descend: slice order is reversed
    write_ct_series(tmp_path / "ct", _stored(6), pos, orientation=OBLIQUE, pixel_spacing=SPACING)
    assert _predict(seg_model, str(tmp_path / "ct"), "--out", str(tmp_path / "out")) == 0
    mask = _mask(tmp_path / "out", "ct")
    assert mask.shape == (COLS, ROWS, 6)
    np.testing.assert_allclose(mask.affine, _expected_affine(OBLIQUE, pos[-1], pos[0], 6), atol=1e-5)


def test_two_series_refused_then_picked_with_series(seg_model: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    pos_a, pos_b = stack_positions(4), stack_positions(5, origin=(-40.0, -35.0, 101.0), step=2.5)
    uid_a, uid_b = uid("art"), uid("ven")
    write_ct_series(tmp_path / "mixed", _stored(4, 1), pos_a, names=[f"A{k}.dcm" for k in range(4)],
                    series_uid=uid_a, series_number=4, description="arterial", pixel_spacing=SPACING)
    write_ct_series(tmp_path / "mixed", _stored(5, 2), pos_b, names=[f"B{k}.dcm" for k in range(5)],
                    series_uid=uid_b, series_number=5, description="venous", pixel_spacing=SPACING)
    assert _predict(seg_model, str(tmp_path / "mixed"), "--out", str(tmp_path / "o1")) == 1
    err = capsys.readouterr().err
    assert f"{uid_a}  (SeriesNumber 4, CT, 'arterial', 4 file(s)" in err
    assert f"{uid_b}  (SeriesNumber 5, CT, 'venous', 5 file(s)" in err
    assert not (tmp_path / "o1" / "masks" / "mixed_seg.nii.gz").exists()
    assert _predict(seg_model, str(tmp_path / "mixed"), "--series", uid_b, "--out", str(tmp_path / "o2")) == 0
    mask = _mask(tmp_path / "o2", "mixed")
    assert mask.shape == (COLS, ROWS, 5)
    np.testing.assert_allclose(mask.affine, _expected_affine(AXIAL, pos_b[0], pos_b[-1], 5), atol=1e-5)


def test_explain_picks_a_series_and_writes_its_geometry(seg_model: str, tmp_path: Path) -> None:
    pos_a, pos_b = stack_positions(4), stack_positions(6, origin=(-40.0, -35.0, 101.0), step=1.5)
    write_ct_series(tmp_path / "mixed", _stored(4, 1), pos_a, names=[f"A{k}.dcm" for k in range(4)],
                    series_uid=uid("a"), series_number=1, pixel_spacing=SPACING)
    write_ct_series(tmp_path / "mixed", _stored(6, 2), pos_b, names=[f"B{k}.dcm" for k in range(6)],
                    series_uid=uid("b"), series_number=2, pixel_spacing=SPACING)
    args = ["-q", "explain", "--model", seg_model, str(tmp_path / "mixed"), "--task", "seg", "--label", "1",
            "--out", str(tmp_path / "e")]
    assert main(args) == 2  # the user error: two series, none picked
    assert main([*args, "--series", "2"]) == 0
    heat = nib.load(str(tmp_path / "e" / "mixed_seg_class_1_gradcam.nii.gz"))
    assert heat.shape == (COLS, ROWS, 6)
    np.testing.assert_allclose(heat.affine, _expected_affine(AXIAL, pos_b[0], pos_b[-1], 6), atol=1e-5)


def test_missing_slice_refused_or_resampled(seg_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pos = stack_positions(8, step=2.0)
    paths = write_ct_series(tmp_path / "gap", _stored(8, 3), pos, pixel_spacing=SPACING)
    paths[4].unlink()
    assert _predict(seg_model, str(tmp_path / "gap"), "--out", str(tmp_path / "o1")) == 1
    assert "1 slice(s) missing: 4 mm between IM0004.dcm" in capsys.readouterr().err
    args = (str(tmp_path / "gap"), "--uneven-slices", "resample", "--out", str(tmp_path / "o2"))
    assert _predict(seg_model, *args) == 0
    mask = _mask(tmp_path / "o2", "gap")
    assert mask.shape == (COLS, ROWS, 8)
    np.testing.assert_allclose(mask.affine, _expected_affine(AXIAL, pos[0], pos[-1], 8), atol=1e-5)


def test_uneven_spacing_refused_or_resampled(seg_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pos = np.array([[-40.0, -35.0, 100.0 + d] for d in (0.0, 2.0, 4.0, 7.0, 10.0, 12.0)])
    write_ct_series(tmp_path / "uneven", _stored(6, 4), pos, pixel_spacing=SPACING)
    assert _predict(seg_model, str(tmp_path / "uneven"), "--out", str(tmp_path / "o1")) == 1
    assert "non-uniform slice spacing: steps range from 2 to 3 mm" in capsys.readouterr().err
    args = (str(tmp_path / "uneven"), "--uneven-slices", "resample", "--out", str(tmp_path / "o2"))
    assert _predict(seg_model, *args) == 0
    mask = _mask(tmp_path / "o2", "uneven")
    assert mask.shape == (COLS, ROWS, 7)  # 12 mm at the median 2 mm step
    np.testing.assert_allclose(mask.affine, _expected_affine(AXIAL, pos[0], pos[-1], 7), atol=1e-5)


def test_another_patients_slice_refused(seg_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    series_uid, pos = uid("p"), stack_positions(6)
    write_ct_series(tmp_path / "ct", _stored(5, 5), pos[:5], series_uid=series_uid, pixel_spacing=SPACING)
    write_ct_slice(tmp_path / "ct" / "other.dcm", _stored(1, 6)[0], pos[5], series_uid=series_uid,
                   patient_id="PAT-9", pixel_spacing=SPACING, instance=6)
    assert _predict(seg_model, str(tmp_path / "ct"), "--out", str(tmp_path / "o")) == 1
    assert "PatientID 'PAT-9': other.dcm (1 file(s))" in capsys.readouterr().err


def test_monochrome1_series_predicts_like_its_monochrome2_twin(seg_model: str, tmp_path: Path) -> None:
    stored, pos = _stored(5, 7), stack_positions(5, step=2.5)
    write_ct_series(tmp_path / "m1", stored, pos, photometric="MONOCHROME1", pixel_spacing=SPACING)
    write_ct_series(tmp_path / "m2", (2**BITS - 1 - stored).astype(np.uint16), pos, pixel_spacing=SPACING)
    assert _predict(seg_model, str(tmp_path / "m1"), str(tmp_path / "m2"), "--out", str(tmp_path / "o")) == 0
    m1, m2 = _mask(tmp_path / "o", "m1"), _mask(tmp_path / "o", "m2")
    np.testing.assert_array_equal(np.asarray(m1.dataobj), np.asarray(m2.dataobj))
    np.testing.assert_allclose(m1.affine, _expected_affine(AXIAL, pos[0], pos[-1], 5), atol=1e-5)


def test_extensionless_series_is_predicted(seg_model: str, tmp_path: Path) -> None:
    pos = stack_positions(5, orientation=OBLIQUE, step=2.0)
    write_ct_series(tmp_path / "CT2", _stored(5, 8), pos, names=[f"1.3.12.2.{k}" for k in range(5)],
                    orientation=OBLIQUE, pixel_spacing=SPACING)
    assert _predict(seg_model, str(tmp_path / "CT2"), "--out", str(tmp_path / "o")) == 0
    mask = _mask(tmp_path / "o", "CT2")
    np.testing.assert_allclose(mask.affine, _expected_affine(OBLIQUE, pos[0], pos[-1], 5), atol=1e-5)


def _radiographs(folder: Path) -> tuple[Path, Path, Path]:
    """The same 16-bit radiograph as a PNG, a CR file (MONOCHROME1, stored inverted) and an extension-less DX."""
    raw = np.random.default_rng(9).integers(0, 2**16, (40, 36)).astype(np.uint16)
    raw[0, 0], raw[-1, -1] = 0, 2**16 - 1  # the full 16-bit range: align's min-max of DICOM floats = PNG's / 65535
    png = write_png(folder / "cxr.png", raw)
    cr = write_radiograph(folder / "cr.dcm", (2**16 - 1 - raw).astype(np.uint16), modality="CR",
                          photometric="MONOCHROME1", bits=16)
    dx = write_radiograph(folder / "1.2.276.0.7230010.3.1.4", raw, modality="DX", bits=16)
    return png, cr, dx


def test_single_radiograph_files_predict_like_the_png(cxr_model: str, tmp_path: Path) -> None:
    png, cr, dx = _radiographs(tmp_path / "in")
    assert _predict(cxr_model, str(png), str(cr), str(dx), "--out", str(tmp_path / "o")) == 0
    recs = {r["id"]: r for r in json.loads((tmp_path / "o" / "predictions.json").read_text())["predictions"]}
    assert sorted(recs) == ["1.2.276.0.7230010.3.1.4", "cr", "cxr"]
    probs = {k: list(r["tasks"]["findings"]["probabilities"].values()) for k, r in recs.items()}
    np.testing.assert_allclose(probs["cr"], probs["cxr"], atol=1e-6)
    np.testing.assert_allclose(probs["1.2.276.0.7230010.3.1.4"], probs["cxr"], atol=1e-6)


def test_single_radiograph_is_explained_like_the_png(cxr_model: str, tmp_path: Path) -> None:
    png, cr, _ = _radiographs(tmp_path / "in")
    for src, out in ((png, "e_png"), (cr, "e_cr")):
        rc = main(["-q", "explain", "--model", cxr_model, str(src), "--task", "findings", "--label", "a",
                   "--method", "cam", "--out", str(tmp_path / out)])
        assert rc == 0
    from_png = np.asarray(Image.open(tmp_path / "e_png" / "cxr_findings_a_cam.png"))
    from_cr = np.asarray(Image.open(tmp_path / "e_cr" / "cr_findings_a_cam.png"))
    np.testing.assert_array_equal(from_cr, from_png)


def test_align_takes_dicom_radiographs(tmp_path: Path) -> None:
    import torch

    from medzoo.models.align import AlignmentStage, AlignNet

    png, _, _ = _radiographs(tmp_path / "in")
    torch.manual_seed(0)
    weights = AlignmentStage(AlignNet(size=32), torch.rand(1, 1, 40, 36)).save(tmp_path / "align.safetensors")
    rc = main(["-q", "align", str(tmp_path / "in"), "--weights", str(weights), "--reference", str(png), "--out",
               str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["1.2.276.0.7230010.3.1.4.png", "cr.png", "cxr.png"]
    ref = np.asarray(Image.open(tmp_path / "out" / "cxr.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "cr.png")), ref)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "1.2.276.0.7230010.3.1.4.png")), ref)
