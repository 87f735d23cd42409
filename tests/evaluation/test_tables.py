"""Evaluation tables against independent computations: bootstrap AUROC CIs, COVIDx-CT levels, localisation."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medzoo.data import open_dataset
from medzoo.data.imageio import write_png
from medzoo.evaluation.chexnet import format_chexnet_table
from medzoo.evaluation.heatmaps import boxes_by_label, localization_summary, model_heatmap_fn, score_heatmaps
from medzoo.evaluation.tables import auroc_ci_table, covidx_ct_tables, write_table
from tests.data.dataset_fixtures import DatasetWriter
from tests.helpers import build_model, pair_auc


def test_auroc_ci_table_matches_a_hand_written_bootstrap():
    rng = np.random.default_rng(1)
    t = (rng.random((40, 2)) < 0.4).astype(float)
    t[3, 1] = np.nan
    s = np.round(np.nan_to_num(t) * 0.3 + rng.random((40, 2)), 2)
    rows = auroc_ci_table(s, t, ["Effusion", "Nodule"], n_boot=200, seed=7)
    boot, draw = np.full((200, 2), np.nan), np.random.default_rng(7)
    for b in range(200):
        idx = draw.integers(0, 40, size=40)
        boot[b] = [pair_auc(s[idx, j], t[idx, j]) for j in range(2)]
    for j, row in enumerate(rows[:2]):
        assert row["auroc"] == pytest.approx(pair_auc(s[:, j], t[:, j]))
        ok = boot[~np.isnan(boot[:, j]), j]
        assert row["ci_lower"] == pytest.approx(np.percentile(ok, 2.5))
        assert row["ci_upper"] == pytest.approx(np.percentile(ok, 97.5))
        assert row["n_pos"] == int((t[:, j] == 1).sum())
    assert rows[2]["label"] == "Mean"
    assert rows[2]["auroc"] == pytest.approx(np.mean([pair_auc(s[:, j], t[:, j]) for j in range(2)]))
    assert rows[2]["ci_lower"] == pytest.approx(np.percentile(np.nanmean(boot, axis=1), 2.5))
    md = format_chexnet_table(rows)
    assert md.splitlines()[0] == "| Pathology | AUROC (95% CI) |"
    r0 = rows[0]
    assert md.splitlines()[2] == f"| Effusion | {r0['auroc']:.3f} ({r0['ci_lower']:.3f}-{r0['ci_upper']:.3f}) |"


def test_covidx_ct_slice_and_patient_levels():
    pids = ["p1", "p1", "p2", "p2", "p2", "p3"]
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1],
                      [0.2, 0.6, 0.2]])
    y = np.array([0, 0, 2, 2, 2, 1])
    tables = covidx_ct_tables(pids, probs, y, ["normal", "pneumonia", "covid"], n_boot=20)
    sl, pt = tables["slice"], tables["patient"]
    assert sl[-1]["accuracy"] == pytest.approx(5 / 6)  # slice 5 (p2) is called normal
    assert sl[2]["sensitivity"] == pytest.approx(2 / 3)
    assert sl[0]["ppv"] == pytest.approx(2 / 3)
    assert sl[2]["auroc"] == pytest.approx(pair_auc(probs[:, 2], (y == 2).astype(float)))
    patient = np.array([probs[:2].mean(0), probs[2:5].mean(0), probs[5]])
    assert pt[-1]["accuracy"] == 1.0
    assert pt[-1]["n"] == 3
    assert pt[0]["auroc"] == pytest.approx(pair_auc(patient[:, 0], np.array([1.0, 0, 0])))
    own = {"p1": [0.1, 0.1, 0.8], "p2": [0.1, 0.1, 0.8], "p3": [0.1, 0.8, 0.1]}
    assert covidx_ct_tables(pids, probs, y, ["n", "p", "c"], patient_probs=own, n_boot=5)["patient"][-1][
        "accuracy"] == pytest.approx(2 / 3)


def _heat_with_block(shape=(64, 64)):
    heat = np.zeros(shape)
    heat[16:24, 8:16] = 1.0
    return heat


def test_localization_on_nih_boxes(tmp_path):
    root = DatasetWriter(tmp_path).nih(boxes=["Image Index,Finding Label,Bbox [x,y,w,h],,,",
                                              "00000004_000.png,Mass,8,16,16,8",
                                              "00000001_000.png,Cardiomegaly,0,0,4,4"])
    manifest = open_dataset("nih-cxr14", root, boxes=True)
    rows = score_heatmaps(lambda rec, label: _heat_with_block(), manifest, ["Mass"], ks=(1.5625, 3.125))
    assert len(rows) == 1
    assert rows[0]["id"] == "00000004_000.png"
    assert rows[0]["label"] == "Mass"
    r = rows[0]
    # box: rows 16..23, cols 8..23 (128 cells); the heat block is its left half (64 cells)
    assert r["iou@1.5625"] == pytest.approx(0.5)
    assert r["dice@1.5625"] == pytest.approx(2 * 64 / 192)
    assert r["iobb@1.5625"] == pytest.approx(1.0)
    assert r["pointing"] == 1.0
    # top 128 cells: the 64-cell block, then 64 of the 4032 tied zeros. The default keeps every tied cell (the whole
    # map: IoU = 128 box cells / 4096); ties="first" takes the first 64 zeros in raster order (row 0, outside the box)
    assert r["ties"] == "include"
    assert r["iou@3.125"] == pytest.approx(128 / 4096)
    assert r["kept@3.125"] == 1.0
    first = score_heatmaps(lambda rec, label: _heat_with_block(), manifest, ["Mass"], ks=(3.125,), ties="first")[0]
    assert first["iou@3.125"] == pytest.approx(64 / 192)
    assert first["dice@3.125"] == pytest.approx(0.5)
    assert r["soft_dice"] == pytest.approx(2 * 64 / (64 + 128))
    summary = localization_summary(rows, iobb_k=1.5625, thresholds=(0.5, 0.99))
    assert summary[0]["label"] == "Mass"
    assert summary[-1]["label"] == "all"
    assert summary[0]["acc@0.5"] == 1.0
    assert summary[0]["acc@0.99"] == 1.0
    assert summary[0]["n"] == 1
    assert summary[0]["ties"] == "include"


def test_vindr_boxes_merge_radiologists(tmp_path):
    rows = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max",
            "9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R10,8,16,16,24",
            "9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R9,16,16,24,24",
            "50a418190bc3fb1ef1633bf9678929b3,No finding,14,R11,,,,"]
    manifest = open_dataset("vindr-cxr", DatasetWriter(tmp_path).vindr(rows=rows))
    rec = next(r for r in manifest if r.id.startswith("9a5"))
    assert boxes_by_label(rec) == {"Cardiomegaly": [(8.0, 16.0, 8.0, 8.0), (16.0, 16.0, 8.0, 8.0)]}
    out = score_heatmaps(lambda rec, label: _heat_with_block(), manifest, ["Heart"],
                                label_map={"Cardiomegaly": "Heart"}, ks=(1.5625,))
    assert len(out) == 1
    assert out[0]["label"] == "Heart"
    assert out[0]["n_boxes"] == 2
    assert out[0]["iou@1.5625"] == pytest.approx(0.5)  # same union as the NIH box above


def test_model_heatmap_fn_returns_image_sized_maps(tmp_path):
    cxr = build_model({"findings": {"type": "multilabel", "level": "image", "labels": ["a", "b", "c"]}})
    p = write_png(tmp_path / "x.png", (np.random.default_rng(0).random((40, 56)) * 255).astype(np.uint8))
    from medzoo.data.manifest import Record

    heat = model_heatmap_fn(cxr, "findings", "cam", "cxr")(
        Record("x", "x", str(p)), "b")
    assert heat.shape == (40, 56)
    assert np.isfinite(heat).all()


def test_write_table_formats(tmp_path):
    rows = [{"label": "a", "auroc": 0.81234, "ci_lower": math.nan}, {"label": "b", "auroc": 0.5, "ci_lower": 0.4}]
    md = write_table(rows, tmp_path / "t.md").read_text().splitlines()
    assert md[0] == "| label | auroc | ci_lower |"
    assert md[2] == "| a | 0.812 | nan |"
    assert list(csv.DictReader(open(write_table(rows, tmp_path / "t.csv"))))[0]["ci_lower"] == ""
    assert json.loads(write_table(rows, tmp_path / "t.json").read_text())[0]["ci_lower"] is None
    with pytest.raises(ValueError, match="unknown table format"):
        write_table(rows, tmp_path / "t.xlsx")
