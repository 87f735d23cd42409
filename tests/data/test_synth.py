"""Synthetic corpus: reproducible, in the exact on-disk formats, with signal where the labels say."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medzoo.data import open_dataset
from medzoo.data.imageio import read_image
from medzoo.data.synth import SIZES, write_synthetic_corpus
from medzoo.data.synth._common import CorpusSize
from medzoo.data.synth._cxr_draw import FINDINGS, render_chest, sample_chest
from medzoo.data.synth.ct import ct_slice
from medzoo.data.synth.severity import write_severity

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_LABELS = {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
              "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    t0 = time.perf_counter()
    paths = write_synthetic_corpus(out, seed=0, size="tiny")
    return out, paths, time.perf_counter() - t0


def _hashes(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def test_same_seed_gives_identical_files(corpus, tmp_path):
    out, _, seconds = corpus
    assert seconds < 10
    again = write_synthetic_corpus(tmp_path / "again", seed=0, size="tiny")
    first, second = _hashes(out), _hashes(tmp_path / "again")
    assert len(first) > 100
    assert first == second
    assert set(again) >= {"msd", "covidx-ct", "nih-cxr14", "montgomery", "shenzhen", "covid-severity"}
    other = _hashes(write_synthetic_corpus(tmp_path / "other", seed=1, size="tiny")["nih-cxr14"])
    nih_first = {k[4:]: v for k, v in first.items() if k.startswith("nih/")}
    assert other != nih_first


def test_nih_format(corpus):
    _, paths, _ = corpus
    root = paths["nih-cxr14"]
    lines = (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    assert lines[0] == NIH_HEADER
    rows = list(csv.reader(lines[1:]))
    assert len(rows) == SIZES["tiny"].nih
    assert all(len(r) == 11 for r in rows)
    patients = {}
    for r in rows:
        assert re.fullmatch(r"\d{8}_\d{3}\.png", r[0])
        assert int(r[0][:8]) == int(r[3])
        assert int(r[0][9:12]) == int(r[2])
        labels = set(r[1].split("|"))
        assert labels == {"No Finding"} or labels <= NIH_LABELS
        assert r[5] in "MF"
        assert r[6] in ("PA", "AP")
        assert float(r[9]) > 0
        assert read_image(root / "images" / r[0])[0].shape == (1, SIZES["tiny"].cxr_px, SIZES["tiny"].cxr_px)
        patients.setdefault(r[3], set()).add(r[0])
    train = set((root / "train_val_list.txt").read_text().split())
    test = set((root / "test_list.txt").read_text().split())
    assert train
    assert test
    assert not train & test
    assert train | test == {r[0] for r in rows}
    for imgs in patients.values():  # patient-disjoint split
        assert imgs <= train or imgs <= test
    box_lines = (root / "BBox_List_2017.csv").read_text().splitlines()
    assert box_lines[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    labels_of = {r[0]: set(r[1].split("|")) for r in rows}
    for b in csv.reader(box_lines[1:]):
        assert len(b) == 6 and b[1] in {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule",
                                        "Pneumonia", "Pneumothorax"}
        assert ("Infiltration" if b[1] == "Infiltrate" else b[1]) in labels_of[b[0]]
        x, y, w, h = map(float, b[2:])
        assert 0 <= x
        assert 0 <= y
        assert w > 0
        assert h > 0
        assert x + w <= 1024
        assert y + h <= 1024


@pytest.mark.parametrize("name", sorted(set(FINDINGS) - {"Cardiomegaly", "Emphysema"}))
def test_findings_are_drawn_inside_their_box(name):
    rng = np.random.default_rng(0)
    chest = sample_chest(rng, 96, 96)
    img, _, _ = render_chest(chest, rng)
    before = img.copy()
    x0, y0, x1, y1 = FINDINGS[name](img, chest, rng, "left")
    change = np.abs(img - before)
    inside = np.zeros_like(change, bool)
    inside[int(y0 * 96):int(np.ceil(y1 * 96)), int(x0 * 96):int(np.ceil(x1 * 96))] = True
    assert change[inside].mean() > 0.05  # visible
    assert change[inside].sum() > 0.8 * change.sum()  # where the box says


def test_cardiomegaly_widens_the_heart():
    widths = [sample_chest(np.random.default_rng(s), 96, 96, cardiomegaly=c).heart[3] for s in range(5) for c in (0, 1)]
    assert min(widths[1::2]) > 1.4 * max(widths[0::2])


def test_covidx_ct_format_and_signal(corpus):
    _, paths, _ = corpus
    root = paths["covidx-ct"]
    seen_patients = {}
    for split in ("train", "val", "test"):
        for line in (root / f"{split}_COVIDx_CT-3A.txt").read_text().splitlines():
            name, cls, *box = line.split()
            assert cls in {"0", "1", "2"}
            assert len(box) == 4
            m = re.fullmatch(r"(?:(Normal|CP|NCP)_(\d+)_\d+_|(STOIC-\d+)-)(\d{4})\.png", name)
            assert m, name
            patient = f"{m.group(1)}_{m.group(2)}" if m.group(1) else m.group(3)
            if m.group(1):
                assert {"Normal": "0", "CP": "1", "NCP": "2"}[m.group(1)] == cls
            seen_patients.setdefault(patient, set()).add(split)
            img = read_image(root / "3A_images" / name)[0]
            xmin, ymin, xmax, ymax = map(int, box)
            assert 0 <= xmin < xmax <= img.shape[2]
            assert 0 <= ymin < ymax <= img.shape[1]
    assert all(len(s) == 1 for s in seen_patients.values())  # patient-disjoint splits
    rng = np.random.default_rng(0)
    dense = {c: np.mean([(ct_slice(rng, 64, c, 0.5)[0] > 200).mean() for _ in range(5)]) for c in range(3)}
    ggo = {c: np.mean([((s > 115) & (s < 150)).mean() for s in (ct_slice(rng, 64, c, 0.5)[0] for _ in range(5))])
           for c in (0, 2)}
    assert dense[1] > dense[0] + 0.02
    assert ggo[2] > ggo[0] + 0.01


def test_msd_dicom_and_medicalnet_format(corpus):
    _, paths, _ = corpus
    task = paths["msd"]
    meta = json.loads((task / "dataset.json").read_text())
    assert set(meta) == {"name", "description", "reference", "licence", "release", "tensorImageSize", "modality",
                         "labels", "numTraining", "numTest", "training", "test"}
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"]["0"] == "background"
    assert meta["numTraining"] == len(meta["training"]) == SIZES["tiny"].ct_train
    assert all(isinstance(t, str) and t.startswith("./imagesTs/") for t in meta["test"])
    for item in meta["training"]:
        img, lab = nib.load(str(task / item["image"])), nib.load(str(task / item["label"]))
        assert img.shape == lab.shape == SIZES["tiny"].ct_shape
        assert np.allclose(img.affine, lab.affine)
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2}
        assert (np.asarray(lab.dataobj) == 1).any()
        hu = np.asarray(img.dataobj)
        assert hu[np.asarray(lab.dataobj) == 1].mean() < -600 < hu[np.asarray(lab.dataobj) == 0].max()
    for line in (paths["medicalnet-list"] / "medicalnet_train.txt").read_text().splitlines():
        a, b = line.split(" ")
        assert (paths["medicalnet-list"] / a).exists()
        assert (paths["medicalnet-list"] / b).exists()
    if "dicom-series" in paths:
        arr, m = read_image(paths["dicom-series"])
        ref, rm = read_image(task / meta["training"][0]["image"])
        np.testing.assert_array_equal(arr, ref.astype(np.float32))
        np.testing.assert_allclose(m["affine"], rm["affine"], atol=1e-4)


def test_tb_sets_format(corpus):
    _, paths, _ = corpus
    mc = paths["montgomery"]
    names = sorted(p.name for p in (mc / "CXR_png").iterdir())
    assert names
    assert all(re.fullmatch(r"MCUCXR_\d{4}_[01]\.png", n) for n in names)
    assert {n[-5] for n in names} == {"0", "1"}
    for n in names:
        img = read_image(mc / "CXR_png" / n)[0]
        left, right = (read_image(mc / "ManualMask" / side / n)[0] for side in ("leftMask", "rightMask"))
        assert left.shape == right.shape == img.shape
        assert set(np.unique(left)) == {0, 255}
        assert np.argwhere(left[0])[:, 1].mean() > np.argwhere(right[0])[:, 1].mean()  # patient's left = image right
        assert img[left > 0].mean() < img[(left == 0) & (right == 0)].mean()  # lungs are dark
        assert "Patient's Sex:" in (mc / "ClinicalReadings" / n.replace(".png", ".txt")).read_text()
    sz = paths["shenzhen"]
    names = sorted(p.name for p in (sz / "CXR_png").iterdir())
    assert all(re.fullmatch(r"CHNCXR_\d{4}_[01]\.png", n) for n in names)
    masks = sorted(p.name for p in paths["shenzhen-masks"].iterdir())
    assert masks
    assert all(m.replace("_mask.png", ".png") in names for m in masks)


def test_severity_format_and_signal(corpus, tmp_path):
    _, paths, _ = corpus
    lines = paths["severity-cohen-csv"].read_text().splitlines()
    assert all(ln.startswith("## ") for ln in lines[:5])
    assert lines[5] == "filename,geographic_mean,opacity_mean"
    for row in csv.reader(lines[6:]):
        assert 0 <= float(row[1]) <= 8
        assert 0 <= float(row[2]) <= 6
        assert (paths["covid-severity"] / "images" / row[0]).exists()
    s_lines = paths["severity-covidnet-s-csv"].read_text().splitlines()
    assert s_lines[0] == "filename,Geographic,Opacity,Sum,Product,patientid,dataset,age,sex,view,location,finding"
    for row in csv.reader(s_lines[1:]):
        assert len(row) == 12
        assert row[1] == "" or (0 <= float(row[1]) <= 8 and 0 <= float(row[2]) <= 8)
    # signal: more extent -> more opacity inside the lungs (Spearman-style rank correlation, numpy only)
    size = CorpusSize(**{**SIZES["tiny"].__dict__, "severity": 24})
    p = write_severity(tmp_path / "sev", seed=0, size=size)
    rows = list(csv.reader(p["with_masks"].read_text().splitlines()[1:]))
    geo = np.array([float(r[3]) for r in rows])
    dens = np.array([read_image(p["root"] / r[0])[0][read_image(p["root"] / r[1])[0] > 0].mean() for r in rows])
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert np.corrcoef(rank(geo), rank(dens))[0, 1] > 0.6


def test_chexpert_and_covidx_cxr_format(corpus):
    _, paths, _ = corpus
    base = paths["chexpert"]
    rows = list(csv.reader((base / "train.csv").read_text().splitlines()))
    assert rows[0][:6] == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding"]
    assert len(rows[0]) == 19
    for r in rows[1:]:
        assert r[0].startswith("CheXpert-v1.0-small/train/patient")
        assert (base.parent / r[0]).exists()
        assert set(r[5:]) <= {"", "1.0", "0.0", "-1.0"}
    valid = list(csv.reader((base / "valid.csv").read_text().splitlines()))[1:]
    assert valid
    assert all(set(r[5:]) <= {"1.0", "0.0"} and int(r[0].split("/")[2][7:]) >= 64541 for r in valid)
    root = paths["covidx-cxr"]
    for split in ("train", "test"):
        for line in (root / f"{split}_COVIDx9A.txt").read_text().splitlines():
            *pid, fname, cls, src = line.split(" ")
            assert pid
            assert cls in {"normal", "pneumonia", "COVID-19"}
            assert (root / split / fname).exists()


def test_vindr_format(corpus):
    _, paths, _ = corpus
    if "vindr-cxr" not in paths:
        pytest.skip("pydicom not installed")
    root = paths["vindr-cxr"]
    lines = (root / "train.csv").read_text().splitlines()
    assert lines[0] == "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
    readers: dict[str, set[str]] = {}
    for r in csv.reader(lines[1:]):
        assert len(r) == 8
        assert re.fullmatch(r"[0-9a-f]{32}", r[0])
        assert re.fullmatch(r"R([1-9]|1[0-7])", r[3])
        readers.setdefault(r[0], set()).add(r[3])
        if r[2] == "14":
            assert r[1] == "No finding"
            assert r[4:] == ["", "", "", ""]
        else:
            assert 0 <= int(r[2]) <= 13
            assert float(r[4]) < float(r[6])
            assert float(r[5]) < float(r[7])
    assert all(len(v) == 3 for v in readers.values())
    for image_id in readers:
        img, meta = read_image(root / "train" / f"{image_id}.dicom")
        assert img.shape == (1, SIZES["tiny"].cxr_px, SIZES["tiny"].cxr_px)
        assert meta["max_value"] == 65535
        assert img[0, 0, 0] < img.max() / 4  # corners are dark air after MONOCHROME1 handling


def test_rsna_format_and_reader(corpus):
    _, paths, _ = corpus
    if "rsna-pneumonia" not in paths:
        pytest.skip("pydicom not installed")
    root, px = paths["rsna-pneumonia"], SIZES["tiny"].cxr_px
    labels = list(csv.reader((root / "stage_2_train_labels.csv").read_text().splitlines()))
    classes = list(csv.reader((root / "stage_2_detailed_class_info.csv").read_text().splitlines()))
    assert labels[0] == ["patientId", "x", "y", "width", "height", "Target"]
    assert classes[0] == ["patientId", "class"]
    assert [r[0] for r in labels[1:]] == [r[0] for r in classes[1:]]  # one class row per label row
    for lab, cls in zip(labels[1:], classes[1:]):
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", lab[0])
        if lab[5] == "1":
            x, y, w, h = map(float, lab[1:5])
            assert cls[1] == "Lung Opacity"
            assert 0 <= x
            assert x + w <= px + 1
            assert 0 <= y
            assert y + h <= px + 1
        else:
            assert lab[1:5] == ["", "", "", ""]
            assert cls[1] in {"Normal", "No Lung Opacity / Not Normal"}
    m = open_dataset("rsna-pneumonia", root)
    assert sorted({r.labels["rsna"] for r in m}) == [0, 1, 2]
    assert read_image(m[0].image)[0].shape == (1, px, px)


def test_tbx11k_format_and_reader(corpus):
    _, paths, _ = corpus
    root = paths["tbx11k"]
    train = json.loads((root / "annotations" / "json" / "TBX11K_train.json").read_text())
    assert {"categories", "images", "annotations"} <= set(train)
    assert [c["name"] for c in train["categories"]] == [
        "ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis"]
    boxed = {a["image_id"] for a in train["annotations"]}
    folders = {i["id"]: i["file_name"].split("/")[0] for i in train["images"]}
    assert {folders[i] for i in boxed} == {"tb"}
    m = open_dataset("tbx11k", root)
    assert [r.labels["tbx11k"] for r in m if r.meta["official_split"] == "train"] == [
        {"health": 0, "sick": 1, "tb": 2}[folders[i["id"]]] for i in train["images"]]
    val = open_dataset("tbx11k", root, split="val")
    assert np.isnan(val[-1].labels["tb_type"]).all() and val[-1].labels["tb"] == 1  # the TB image without a box
    assert not json.loads((root / "annotations" / "json" / "all_test.json").read_text())["annotations"]


def test_synth_cli(tmp_path, capsys):
    import argparse

    from medzoo.cli import synth_cmd

    parser = argparse.ArgumentParser()
    synth_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", str(tmp_path / "c"), "--size", "tiny", "--seed", "2", "--no-dicom"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "nih-cxr14" in out
    assert "covidx-ct" in out
    assert "dicom-series" not in out
    assert json.loads((tmp_path / "c" / "corpus.json").read_text())["seed"] == 2


@pytest.mark.slow
def test_small_corpus_is_quick_and_sized(tmp_path):
    t0 = time.perf_counter()
    paths = write_synthetic_corpus(tmp_path, seed=0, size="small")
    assert time.perf_counter() - t0 < 20
    assert len(list((paths["nih-cxr14"] / "images").iterdir())) == SIZES["small"].nih
    assert len(list((paths["msd"] / "imagesTr").glob("lung_*.nii.gz"))) == SIZES["small"].ct_train
