"""``medzoo predict``, ``explain`` and ``info`` on export directories and checkpoints, in-process: each model's
preprocessing contract, and refusal of a model without one."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from medzoo.cli import explain_cmd, predict_cmd
from medzoo.cli.main import main
from medzoo.config import to_dict
from medzoo.data.imageio import write_nifti, write_png
from medzoo.data.presets import ct_contract
from tests.helpers import CXR_PRE, CXR_TASKS, build_model, write_tiny_export


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
    ct_pre = {"modality": ["CT"], "axes": "XYZ", "normalisation": "window", "intensity_window": [-100, 100]}
    seg = write_tiny_export(tmp_path, "seg", seg_task, preprocessing=ct_pre)
    aff = np.diag([1.5, 1.0, 2.0, 1.0])
    vol = write_nifti(tmp_path / "ct.nii.gz", np.random.default_rng(1).uniform(-100, 100, (20, 16, 12)), aff)
    assert _cli("explain", "--model", seg, str(vol), "--task", "seg", "--label", "1", "--out",
                str(tmp_path / "v")) == 0
    heat = nib.load(tmp_path / "v" / "ct_seg_class_1_gradcam.nii.gz")
    assert heat.shape == (20, 16, 12)
    np.testing.assert_allclose(heat.affine, aff)
    assert (tmp_path / "v" / "ct_seg_class_1_gradcam_montage.png").is_file()


def test_a_model_without_contract_is_refused_until_one_is_given(images, tmp_path, capsys):
    bare = write_tiny_export(tmp_path, "bare", CXR_TASKS, preprocessing=None)
    good, _ = images
    assert main(["-q", "predict", "--model", bare, good[0], "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "bare: the model declares no preprocessing contract" in err and "--preprocessing NAME|FILE" in err
    assert not (tmp_path / "p").exists()  # refused before any input was read
    assert main(["-q", "explain", "--model", bare, good[0], "--task", "findings", "--out", str(tmp_path / "e")]) == 2
    assert "declares no preprocessing contract" in capsys.readouterr().err
    contract = tmp_path / "cxr32.yaml"
    contract.write_text("modality: CXR\naxes: HW\nrescale: max_value\ninput_size: [32, 32]\nsize_mode: resize\n")
    assert main(["-q", "predict", "--model", bare, good[0], "--preprocessing", str(contract), "--out",
                 str(tmp_path / "p")]) == 0
    # the same weights (seed 0), contract recorded
    with_contract = write_tiny_export(tmp_path, "same", CXR_TASKS, preprocessing=CXR_PRE)
    assert main(["-q", "predict", "--model", with_contract, good[0], "--out", str(tmp_path / "q")]) == 0
    np.testing.assert_allclose(_probs(tmp_path / "p")["img0"], _probs(tmp_path / "q")["img0"], atol=1e-7)
    assert main(["-q", "explain", "--model", bare, good[0], "--task", "findings", "--preprocessing", "cxr",
                 "--out", str(tmp_path / "e")]) == 0


def test_preprocessing_once_per_model_or_once_for_all(cxr_exports, images, tmp_path):
    good, _ = images
    with pytest.raises(ValueError, match="--preprocessing given 3 times for 2 --model"):
        _cli("predict", "--model", cxr_exports[0], "--model", cxr_exports[1], good[0], "--out", str(tmp_path),
             "--preprocessing", "cxr", "--preprocessing", "cxr", "--preprocessing", "cxr")


def test_info_shows_the_contract_of_exports_and_checkpoints(cxr_exports, tmp_path, capsys):
    assert main(["info", cxr_exports[0]]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out[out.index("preprocessing:"):])["preprocessing"]
    assert shown["image"]["input_size"] == [32, 32] and shown["image"]["axes"] == "HW"
    assert "name: m1" in out
    model = build_model({"seg": {"type": "segmentation", "level": "volume", "num_classes": 2}})
    contract = ct_contract(spacing=2.0, patch=16)
    torch.save({"model": model.state_dict(), "config": yaml.safe_dump({"model": to_dict(model.config)}),
                "preprocessing": {"volume": contract.to_dict()}}, tmp_path / "best.pt")
    assert main(["info", str(tmp_path / "best.pt")]) == 0
    out = capsys.readouterr().out
    assert "(file)" in out
    assert yaml.safe_load(out[out.index("preprocessing:"):])["preprocessing"] == {"volume": contract.to_dict()}
    assert main(["info", str(write_tiny_export(tmp_path, "bare", CXR_TASKS, preprocessing=None))]) == 0
    assert "preprocessing: none declared" in capsys.readouterr().out
    assert main(["info", "resnet10.medicalnet23"]) == 0  # a catalog name: its spec, contract and cache state
    out = capsys.readouterr().out
    assert yaml.safe_load(out[out.index("preprocessing:"):out.index("# resnet_10")])["preprocessing"]["volume"][
        "axes"] == "DHW"
