"""Overlay, montage and heatmap writers; prediction records and masks."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medzoo.infer.inputs import InputItem
from medzoo.infer.predict import TaskOutput
from medzoo.infer.writers import (
    heat_colors,
    montage_png,
    output_record,
    overlay_png,
    overlay_rgb,
    prediction_rows,
    write_heatmap_nifti,
    write_masks,
)


def test_overlay_blends_gray_and_colour():
    img = np.array([[0.0, 10.0], [20.0, 40.0]])
    heat = np.array([[0.0, 1.0], [0.5, 0.25]])
    gray = np.rint(np.repeat((img / 40)[..., None], 3, -1) * 255)
    np.testing.assert_array_equal(overlay_rgb(img, heat, alpha=0.0), gray)
    np.testing.assert_array_equal(overlay_rgb(img, heat, alpha=1.0), np.rint(heat_colors(heat) * 255))
    half = overlay_rgb(img, heat, alpha=0.5).astype(float)
    np.testing.assert_allclose(half, 0.5 * gray + 0.5 * np.rint(heat_colors(heat) * 255), atol=1.0)
    assert heat_colors(np.array(0.0)).tolist() == [0.0, 0.0, 0.5] and heat_colors(np.array(1.0)).tolist() == [
        0.5, 0.0, 0.0]


def test_overlay_png_and_montage(tmp_path):
    p = overlay_png(tmp_path / "o.png", np.random.rand(12, 9), np.random.rand(12, 9))
    assert Image.open(p).size == (9, 12) and Image.open(p).mode == "RGB"
    vol = np.zeros((6, 8, 4))
    vol[3, :, :] = 1.0
    heat = np.zeros_like(vol)
    heat[:, 4, :] = 1.0
    m = np.asarray(Image.open(montage_png(tmp_path / "m.png", vol, heat, alpha=0.0)))
    assert m.shape == (8, 4 + 4 + 8, 3)  # panels [Y,Z], [X,Z], [X,Y], padded to the tallest (8)
    assert (m[:, :4] == 255).all()  # vol[3] is the mid-slice along X, all ones
    with pytest.raises(ValueError, match="same shape|one shape"):
        overlay_rgb(np.zeros((3, 3)), np.zeros((3, 4)))


def test_heatmap_nifti_keeps_affine(tmp_path):
    aff = np.diag([0.7, 0.8, 2.0, 1.0])
    aff[:3, 3] = [1, 2, 3]
    heat = np.random.rand(5, 6, 7).astype(np.float32)
    img = nib.load(write_heatmap_nifti(tmp_path / "h.nii.gz", heat, aff))
    np.testing.assert_allclose(img.affine, aff)
    np.testing.assert_allclose(np.asarray(img.dataobj), heat)


def test_records_rows_and_masks(tmp_path):
    probs = np.zeros((3, 4, 4, 2))
    probs[0], probs[1, :2], probs[2, 2:] = 1.0, 2.0, 3.0  # argmax: 1 in the first half, 2 in the second
    outputs = {"seg": TaskOutput("seg", "segmentation", ("bg", "liver", "tumour"), probs=probs),
               "f": TaskOutput("f", "multilabel", ("x", "y"), probs=np.array([0.2, 0.9]),
                               thresholds=np.array([0.1, 0.95]))}
    item = InputItem("case", "/data/case.nii.gz", "volume")
    files = write_masks(tmp_path, item, outputs, {"affine": np.eye(4)})
    rec = output_record(item, outputs, files)
    assert rec["tasks"]["seg"]["voxels"] == {"bg": 0, "liver": 16, "tumour": 16}
    assert rec["tasks"]["f"]["decisions"] == {"x": 1, "y": 0}
    mask = np.asarray(nib.load(files["seg"]).dataobj)
    assert mask.dtype == np.uint8 and mask[:2].min() == 1 and mask[2:].min() == 2
    rows = prediction_rows(rec)
    assert [(r["task"], r["label"]) for r in rows] == [("seg", "bg"), ("seg", "liver"), ("seg", "tumour"),
                                                      ("f", "x"), ("f", "y")]
    assert rows[3]["probability"] == 0.2 and rows[3]["threshold"] == 0.1
