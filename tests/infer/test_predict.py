"""Predictor: sliding windows, original-space masks, DICOM/PNG/series inputs, bad inputs among good ones."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from medzoo.data.contract import Preprocessing
from medzoo.data.imageio import read_image, write_nifti, write_png
from medzoo.infer.inputs import discover_inputs
from medzoo.infer.predict import NoContractError, Predictor, predict_inputs
from medzoo.zoo.publish import export_model
from tests.helpers import build_model as build

CT_WINDOW = {"modality": ["CT"], "axes": "XYZ", "normalisation": "window", "intensity_window": [-200, 300]}
CXR32 = {"modality": ["CXR"], "axes": "HW", "rescale": "max_value", "input_size": [32, 32], "size_mode": "resize",
         "resize": "linear"}


def _volume(shape, seed=0):
    return np.random.default_rng(seed).uniform(-200, 300, size=shape).astype(np.float32)


def test_window_covering_volume_equals_whole_volume(seg3d):
    x = torch.rand(1, 1, 16, 24, 20)
    with torch.no_grad():
        whole = seg3d(x, tasks=["seg"])["seg"]
        covering = sliding_window_inference(x, (16, 24, 20), 1, lambda w: seg3d(w, tasks=["seg"])["seg"])
    got = Predictor(seg3d, preprocessing="none", patch_size=(16, 24, 20), fuse=False).dense_logits(x, ["seg"])["seg"]
    torch.testing.assert_close(covering, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(got, whole, rtol=0, atol=0)


def test_default_predictor_folds_batchnorm_with_unchanged_outputs(seg3d):
    """The adopted inference default: BN folded into the convolutions of a copy; outputs equal within 1e-5."""
    x = torch.rand(1, 1, 16, 24, 20)
    predictor = Predictor(seg3d, preprocessing="none", patch_size=(16, 24, 20))
    assert predictor.model is not seg3d
    bn = torch.nn.modules.batchnorm._BatchNorm
    assert not any(isinstance(m, bn) and m.training for m in predictor.model.modules())
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in predictor.model.encoder.modules())
    assert n_bn < sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in seg3d.encoder.modules())
    with torch.no_grad():
        whole = seg3d(x, tasks=["seg"])["seg"]
    torch.testing.assert_close(predictor.dense_logits(x, ["seg"])["seg"], whole, rtol=1e-5, atol=1e-5)


def test_large_volume_equals_direct_sliding_window_call(seg3d):
    x = torch.rand(1, 1, 28, 20, 16)
    seen = []
    hook = seg3d.encoder.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[2:])))
    try:
        got = Predictor(seg3d, preprocessing="none", patch_size=(16, 16, 16), overlap=0.25, sw_batch_size=2,
                        blend="gaussian").dense_logits(x, ["seg"])["seg"]
    finally:
        hook.remove()
    with torch.no_grad():
        ref = sliding_window_inference(x, (16, 16, 16), 2, lambda w: seg3d(w, tasks=["seg"])["seg"],
                                       overlap=0.25, mode="gaussian")
    assert set(seen) == {(16, 16, 16)} and len(seen) > 1  # it really ran windows of the patch size
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_mask_has_input_affine_and_shape(seg3d, tmp_path):
    affine = np.array([[0, 0, 2.5, -40], [-0.8, 0, 0, 10], [0, 1.2, 0, 5], [0, 0, 0, 1]], dtype=np.float64)
    src = write_nifti(tmp_path / "ct.nii.gz", _volume((21, 18, 13)), affine)
    contract = {**CT_WINDOW, "orientation": "RAS", "spacing": [1.5, 1.5, 1.5], "input_size": [16, 16, 16]}
    report = predict_inputs(Predictor(seg3d, preprocessing=contract), [src], tmp_path / "out")
    assert report.errors == []
    img = nib.load(report.records[0]["tasks"]["seg"]["mask"])
    assert img.shape == (21, 18, 13)
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1}


def test_reorientation_is_undone_exactly(seg3d):
    vol = _volume((12, 16, 8), seed=1)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS: RAS reorientation flips the first axis
    out = Predictor(seg3d, preprocessing={**CT_WINDOW, "orientation": "RAS"}).predict_array(vol[None], "volume",
                                                                                           {"affine": affine})
    x = torch.from_numpy(np.clip((vol[::-1].copy() + 200) / 500, 0, 1).astype(np.float32))  # the window, by hand
    with torch.no_grad():
        probs = seg3d(x[None, None], tasks=["seg"])["seg"].softmax(1)[0].flip(1).numpy()
    np.testing.assert_allclose(out["seg"].probs, probs, atol=1e-5)


def test_vector_outputs_match_model_and_files(cxr, tmp_path):
    img = (np.random.default_rng(2).random((40, 48)) * 255).astype(np.uint8)
    src = write_png(tmp_path / "cxr.png", img)
    report = predict_inputs(Predictor(cxr, preprocessing=CXR32), [src], tmp_path / "out")
    from medzoo.data.imageio import resize_2d

    x = torch.from_numpy(resize_2d(img[None].astype(np.float32) / 255.0, (32, 32)))[None]
    with torch.no_grad():
        logits = cxr(x)
    probs = logits["findings"].sigmoid()[0].numpy()
    rows = [r for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv")) if r["task"] == "findings"]
    assert [r["label"] for r in rows] == ["a", "b", "c"]
    np.testing.assert_allclose([float(r["probability"]) for r in rows], probs, atol=1e-6)
    assert [int(r["decision"]) for r in rows] == [int(p >= t) for p, t in zip(probs, (0.3, 0.5, 0.7))]
    rec = json.loads((tmp_path / "out" / "predictions.json").read_text())["predictions"][0]
    covid = logits["covid"].softmax(-1)[0].numpy()
    assert rec["tasks"]["covid"]["prediction"] == ["neg", "pos"][int(covid.argmax())]
    geo = float(logits["severity"][0, 0]) * 8
    assert rec["tasks"]["severity"]["values"]["geo"] == pytest.approx(min(max(geo, 0), 8), abs=1e-5)
    assert report.errors == []


def test_dicom_series_input(seg3d, tmp_path):
    pytest.importorskip("pydicom")
    from medzoo.data.imageio import write_dicom_series

    vol = np.rint(_volume((16, 12, 6), seed=3))
    write_dicom_series(tmp_path / "series", vol, spacing=(0.8, 0.9, 2.0), origin=(5.0, -3.0, 10.0))
    report = predict_inputs(Predictor(seg3d, preprocessing="none"), [tmp_path / "series"], tmp_path / "out")
    assert report.errors == [] and report.records[0]["kind"] == "volume"
    arr, meta = read_image(tmp_path / "series")
    img = nib.load(report.records[0]["tasks"]["seg"]["mask"])
    assert img.shape == arr.shape[1:]
    np.testing.assert_allclose(img.affine, meta["affine"], atol=1e-5)
    with torch.no_grad():
        ref = seg3d(torch.from_numpy(arr[None]), tasks=["seg"])["seg"].argmax(1)[0].numpy()
    np.testing.assert_array_equal(np.asarray(img.dataobj), ref)


def test_bad_input_reported_others_still_run(cxr, tmp_path):
    good = [write_png(tmp_path / f"g{i}.png", np.full((32, 32), 40 * i, np.uint8)) for i in range(2)]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    listing = tmp_path / "list.csv"
    listing.write_text("id,path\nfirst,g0.png\nbad,broken.png\nmissing,nope.png\nsecond,g1.png\n")
    report = predict_inputs(Predictor(cxr, preprocessing=CXR32), [listing], tmp_path / "out")
    assert [r["id"] for r in report.records] == ["first", "second"]
    wheres = [w for w, _ in report.errors]
    assert wheres == [f"{listing}:4", f"{listing}:3"]  # discovery errors first, then the unreadable file
    assert "broken.png" in report.errors[1][1]
    out = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(out["predictions"]) == 2 and len(out["errors"]) == 2
    assert {r["input"] for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))} == {"first", "second"}
    assert good[0].exists()


def test_series_folder_gives_patient_prediction_and_slice_weights(series_model, tmp_path):
    folder = tmp_path / "patient7"
    rng = np.random.default_rng(4)
    slices = [(rng.random((24, 24)) * 255).astype(np.uint8) for _ in range(5)]
    for i, s in enumerate(slices):
        write_png(folder / f"slice{i + 1}.png", s)  # natural order: slice1..slice5 (not slice1, slice10...)
    (item,), errors = discover_inputs([folder])
    assert item.kind == "series" and errors == []
    report = predict_inputs(Predictor(series_model, preprocessing="series"), [folder], tmp_path / "out")
    entry = report.records[0]["tasks"]["covid_ct"]
    x = torch.from_numpy(np.stack(slices).astype(np.float32)[:, None] / 255.0)[None]
    pad = torch.zeros(1, 5, dtype=torch.bool)
    ref = series_model.predict(x, pad_mask=pad)["covid_ct"]["probs"][0].numpy()
    np.testing.assert_allclose(list(entry["probabilities"].values()), ref, atol=1e-6)
    weights = series_model.slice_weights(x, pad)[0].detach().numpy()
    np.testing.assert_allclose(entry["slice_weights"], weights, atol=1e-6)


def test_image_model_on_slice_folder_averages_slices(cxr, tmp_path):
    rng = np.random.default_rng(5)
    slices = [(rng.random((32, 32)) * 255).astype(np.uint8) for _ in range(3)]
    for i, s in enumerate(slices):
        write_png(tmp_path / "p" / f"{i}.png", s)
    out = Predictor(cxr, preprocessing="series").predict_array(np.stack(slices)[:, None], "series",
                                                              {"max_value": 255.0})
    x = torch.from_numpy(np.stack(slices).astype(np.float32)[:, None] / 255.0)
    per = cxr.predict(x, tasks=["findings"])["findings"]["probs"].numpy()
    np.testing.assert_allclose(out["findings"].slice_probs, per, atol=1e-6)
    np.testing.assert_allclose(out["findings"].probs, per.mean(0), atol=1e-6)


def test_unsupported_inputs_name_the_path(tmp_path):
    (tmp_path / "notes.doc").write_text("x")
    items, errors = discover_inputs([tmp_path / "notes.doc", tmp_path / "absent.nii.gz"])
    assert items == [] and "notes.doc" in errors[0][1] and "input not found" in errors[1][1]


def test_from_ref_takes_the_contract_from_the_weights_spec(cxr, tmp_path):
    out = export_model(cxr, tmp_path / "tiny", name="tiny.cxr", preprocessing=CXR32)
    predictor = Predictor.from_ref(out)
    assert predictor.contract("image") == Preprocessing.from_dict(CXR32)
    assert predictor.metadata["name"] == "tiny.cxr"


def test_a_model_without_contract_is_refused(cxr, tmp_path):
    """Never silently "none": a model that declares no contract needs one given."""
    model = build({"cls": {"type": "classification", "level": "image", "labels": ["a", "b"]}})
    out = export_model(model, tmp_path / "bare", name="bare")
    with pytest.raises(NoContractError, match="bare: the model declares no preprocessing contract"):
        Predictor.from_ref(out)
    with pytest.raises(NoContractError, match="--preprocessing NAME|FILE"):
        Predictor(model)
    assert Predictor.from_ref(out, preprocessing="cxr").contract("image").input_size == (224, 224)


def test_a_model_without_contract_for_the_input_kind_is_refused(seg3d):
    predictor = Predictor(seg3d, preprocessing=CXR32)  # an image contract only
    with pytest.raises(NoContractError, match="no preprocessing contract for volume inputs.*'image'"):
        predictor.predict_array(np.zeros((1, 8, 8, 8), np.float32), "volume")


def test_from_ref_on_a_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.*not an export directory"):
        Predictor.from_ref(tmp_path / "nothing")


def test_inputs_are_released_after_each_prediction(cxr, tmp_path, monkeypatch):
    import gc
    import weakref

    import medzoo.infer.runner as predict_mod

    paths = [write_png(tmp_path / f"i{i}.png", np.full((32, 32), 10 * i, np.uint8)) for i in range(4)]
    refs, real = [], predict_mod.load_input

    def tracking(item):
        loaded = real(item)
        refs.append(weakref.ref(loaded.array))
        return loaded

    monkeypatch.setattr(predict_mod, "load_input", tracking)
    report = predict_inputs(Predictor(cxr, preprocessing=CXR32), paths, tmp_path / "out")
    gc.collect()
    assert len(report.records) == 4 and len(refs) == 4
    assert all(r() is None for r in refs)  # nothing keeps an input alive: memory stays flat over many inputs
    json.dumps(report.records)  # records hold plain data only


def test_contract_mismatch_warns(seg3d, caplog):
    vol = np.random.default_rng(0).random((1, 8, 8, 8)).astype(np.float32)  # already in [0, 1], not HU
    contract = {"modality": ["CT"], "axes": "XYZ", "normalisation": "window", "intensity_window": [-1000, 400]}
    with caplog.at_level("WARNING", logger="medzoo.data.pipeline"):
        Predictor(seg3d, preprocessing=contract).predict_array(vol, "volume", {}, "ct7")
    assert "ct7: values lie in [" in caplog.text and "looks already normalised" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="medzoo.data.pipeline"):
        Predictor(seg3d, preprocessing=contract).predict_array(vol * 800 - 400, "volume", {}, "ct8")
    assert "ct8" not in caplog.text


def test_task_selection(cxr):
    img = np.zeros((1, 32, 32), np.uint8)
    out = Predictor(cxr, preprocessing=CXR32, tasks=["covid"]).predict_array(img, "image", {"max_value": 255.0})
    assert list(out) == ["covid"]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['covd'\].*'findings', 'covid', 'severity'"):
        Predictor(cxr, preprocessing=CXR32, tasks=["covd"])
    with pytest.raises(ValueError, match="no task for volume input"):
        Predictor(cxr, preprocessing="none").predict_array(np.zeros((1, 8, 8, 8), np.float32), "volume")
