"""``medzoo predict`` and ``medzoo explain`` on export directories, in-process."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest

from medzoo.cli import explain_cmd, predict_cmd
from medzoo.data.imageio import write_nifti, write_png
from tests.helpers import write_tiny_export


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-q", "--quiet", action="store_true")
    sub = parser.add_subparsers(dest="command")
    predict_cmd.add_parser(sub)
    explain_cmd.add_parser(sub)
    args = parser.parse_args(["-q", *argv])
    return args.func(args)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    good = [write_png(tmp_path / f"img{i}.png", (rng.random((40, 40)) * 255).astype(np.uint8)) for i in range(2)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    return [str(p) for p in good], str(bad)


def _probs(out_dir):
    recs = json.loads((out_dir / "predictions.json").read_text())["predictions"]
    return {r["id"]: list(r["tasks"]["findings"]["probabilities"].values()) for r in recs}


def test_predict_ensemble_and_bad_input(cxr_exports, images, tmp_path, capsys):
    good, bad = images
    assert _cli("predict", "--model", cxr_exports[0], *good, "--out", str(tmp_path / "o1")) == 0
    assert _cli("predict", "--model", cxr_exports[1], *good, "--out", str(tmp_path / "o2")) == 0
    rc = _cli("predict", "--model", cxr_exports[0], "--model", cxr_exports[1], good[0], bad, good[1],
              "--out", str(tmp_path / "ens"))
    assert rc == 1  # one input failed, the others ran
    p1, p2, ens = _probs(tmp_path / "o1"), _probs(tmp_path / "o2"), _probs(tmp_path / "ens")
    assert sorted(ens) == ["img0", "img1"]
    for key in ens:
        np.testing.assert_allclose(ens[key], (np.array(p1[key]) + np.array(p2[key])) / 2, atol=1e-9)
    err = capsys.readouterr().err
    assert "FAILED" in err and "bad.png" in err


def test_predict_weights_must_match_models(cxr_exports, images, tmp_path):
    with pytest.raises(ValueError, match="--weights has 1 values for 2 --model"):
        _cli("predict", "--model", cxr_exports[0], "--model", cxr_exports[1], images[0][0], "--out", str(tmp_path),
             "--weights", "1")


def test_explain_image_and_volume(cxr_exports, images, tmp_path):
    assert _cli("explain", "--model", cxr_exports[0], images[0][0], "--task", "findings", "--label", "b",
                "--method", "cam", "--out", str(tmp_path / "e")) == 0
    assert (tmp_path / "e" / "img0_findings_b_cam.png").is_file()
    seg_task = {"seg": {"type": "segmentation", "level": "volume", "num_classes": 2}}
    ct_pre = {"modality": ["CT"], "normalisation": "window", "intensity_window": [-100, 100]}
    seg = write_tiny_export(tmp_path, "seg", seg_task, preprocessing=ct_pre)
    aff = np.diag([1.5, 1.0, 2.0, 1.0])
    vol = write_nifti(tmp_path / "ct.nii.gz", np.random.default_rng(1).uniform(-100, 100, (20, 16, 12)), aff)
    assert _cli("explain", "--model", seg, str(vol), "--task", "seg", "--label", "1", "--out",
                str(tmp_path / "v")) == 0
    heat = nib.load(tmp_path / "v" / "ct_seg_class_1_gradcam.nii.gz")
    assert heat.shape == (20, 16, 12)
    np.testing.assert_allclose(heat.affine, aff)
    assert (tmp_path / "v" / "ct_seg_class_1_gradcam_montage.png").is_file()
