"""Montgomery / Shenzhen TB sets and the COVIDx CXR / CT label files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medzoo.data import DatasetFormatError, open_dataset
from medzoo.data.readers.covidx import scan_of
from tests.data.dataset_fixtures import COVIDX_CT, COVIDX_TRAIN, write_image, write_lines


def test_montgomery(ds):
    root = ds.montgomery()
    m = open_dataset("montgomery", root)
    assert m.label_names == {"tb": ["normal", "tb"]}
    assert [(r.id, r.labels["tb"]) for r in m] == [("MCUCXR_0001_0", 0), ("MCUCXR_0002_1", 1), ("MCUCXR_0104_1", 1)]
    left, right = m[1].meta["mask"]
    set_dir = root / "MontgomerySet"
    assert left == str(set_dir / "ManualMask" / "leftMask" / "MCUCXR_0002_1.png")
    assert right == str(set_dir / "ManualMask" / "rightMask" / "MCUCXR_0002_1.png")
    assert m[0].image == str(set_dir / "CXR_png" / "MCUCXR_0001_0.png")
    assert m[0].patient_id == "MCUCXR_0001"
    assert len(open_dataset("montgomery", set_dir)) == 3  # the set folder itself works too


def test_montgomery_missing_mask_and_bad_name(ds):
    root = ds.montgomery()
    os.remove(root / "MontgomerySet" / "ManualMask" / "rightMask" / "MCUCXR_0002_1.png")
    with pytest.raises(DatasetFormatError, match=r"MCUCXR_0002_1.png: lung mask not found: .*rightMask"):
        open_dataset("montgomery", root)
    write_image(root / "MontgomerySet" / "CXR_png" / "MCUCXR_0003_x.png")
    m = open_dataset("montgomery", root, on_error="skip")
    assert [r.id for r in m] == ["MCUCXR_0001_0", "MCUCXR_0104_1"]
    assert sorted(os.path.basename(s.path) for s in m.skipped) == ["MCUCXR_0002_1.png", "MCUCXR_0003_x.png"]
    assert "expected MCUCXR_####_0.png" in [s for s in m.skipped if "0003" in s.path][0].reason


def test_shenzhen_optional_masks(ds):
    root = ds.shenzhen()
    m = open_dataset("shenzhen", root)
    assert [(r.id, r.labels["tb"]) for r in m] == [("CHNCXR_0001_0", 0), ("CHNCXR_0002_1", 1)]
    assert "mask" not in m[0].meta
    assert m[1].meta["mask"] == [str(root / "mask" / "CHNCXR_0002_1_mask.png")]


def test_covidx_cxr_both_line_formats(ds):
    root = ds.covidx_cxr()
    m = open_dataset("covidx-cxr", root)
    assert m.label_names == {"covid": ["Normal", "Pneumonia", "COVID-19"]}
    got = [(r.patient_id, r.id, r.labels["covid"], r.meta["origin"], r.meta["official_split"]) for r in m]
    assert got == [
        ("419639-003251", "MIDRC-RICORD-1C-419639-003251-46647-0.png", 2, "ricord", "train"),
        ("COVID 1", "COVID(1).png", 2, "sirm", "train"),
        ("8a6b1a3f-1c8e-4b17-9d32-9b5e5f5b5d61", "8a6b1a3f.png", 0, "rsna", "train"),
        ("p17", "pneumo17.png", 1, None, "train"),
        ("p90", "t1.png", 0, None, "test"),
        ("p91", "t2.png", 2, "cohen", "test"),
    ]
    assert m[4].image == str(root / "test" / "t1.png")
    assert m[1].meta["source"] == (str(root / "train_COVIDx9A.txt"), 2)
    assert [r.id for r in open_dataset("covidx-cxr", root, split="test")] == ["t1.png", "t2.png"]


def test_covidx_cxr_binary_files_get_their_own_task(ds):
    root = ds.covidx_cxr(train=["p1 8a6b1a3f.png negative rsna", "p2 COVID(1).png positive sirm"])
    m = open_dataset("covidx-cxr", root)
    assert m.label_names == {"covid": ["Normal", "Pneumonia", "COVID-19"], "covid_binary": ["negative", "positive"]}
    assert m[0].labels["covid_binary"] == 0
    assert m[1].labels["covid_binary"] == 1
    assert np.isnan(m[0].labels["covid"])
    assert np.isnan(m[2].labels["covid_binary"])
    assert m[2].labels["covid"] == 0


@pytest.mark.parametrize("line,reason", [
    ("p5 x.png covid", "unknown label"),
    ("x.png normal", "expected 'patientid filename class [source]'"),
    ("p5 missing.png normal rsna", "image not found: missing.png"),
])
def test_covidx_cxr_bad_lines(ds, line, reason):
    root = ds.covidx_cxr(train=[COVIDX_TRAIN[0], line])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("covidx-cxr", root)
    assert str(info.value).startswith(f"{root / 'train_COVIDx9A.txt'}:2: ")
    assert reason in str(info.value)


def test_covidx_cxr_ambiguous_files(ds):
    root = ds.covidx_cxr()
    write_lines(root / "train_COVIDx9B.txt", ["p1 8a6b1a3f.png negative rsna"])
    with pytest.raises(DatasetFormatError, match="several train label files"):
        open_dataset("covidx-cxr", root)
    assert open_dataset("covidx-cxr", root, version="9B", split="train")[0].labels["covid_binary"] == 0


@pytest.mark.parametrize("name,want", [
    ("NCP_341_1834_0022.png", ("NCP_341_1834", "NCP_341", 22)),
    ("Normal_12_100_0005.png", ("Normal_12_100", "Normal_12", 5)),
    ("STOIC-7-0012.png", ("STOIC-7", "STOIC-7", 12)),
    ("COVIDCTMD-P041-IM0041.png", ("COVIDCTMD-P041", "COVIDCTMD-P041", 41)),
    ("137covid_patient9_SR_3_IM00027.png", ("137covid_patient9_SR_3", "COVID-CTset_patient9", 27)),
    ("137covid_patient9_SR_4_IM00003.png", ("137covid_patient9_SR_4", "COVID-CTset_patient9", 3)),
    ("normal12_patient200_SR_2_IM00011.png", ("normal12_patient200_SR_2", "COVID-CTset_patient200", 11)),
    ("volume-covid19-A-0028_1-0020.png", ("volume-covid19-A-0028_1", "volume-covid19-A-0028", 20)),
    ("volume-covid19-A-0028_0-0023.png", ("volume-covid19-A-0028_0", "volume-covid19-A-0028", 23)),
    ("LIDC-IDRI-0001-0100.png", ("LIDC-IDRI-0001", "LIDC-IDRI-0001", 100)),
    ("noslice.png", None),
])
def test_scan_of(name, want):
    assert scan_of(name) == want


def test_covidx_ct_slices(ds):
    root = ds.covidx_ct()
    m = open_dataset("covidx-ct", root)
    assert m.label_names == {"covid": ["Normal", "Pneumonia", "COVID-19"]}
    assert [r.id for r in m] == [line.split()[0] for lines in COVIDX_CT.values() for line in lines]
    r = m[0]
    assert r.labels["covid"] == 2
    assert r.meta["bbox"] == (0, 130, 512, 429)
    assert r.patient_id == "NCP_341"
    assert r.image == str(root / "2A_images" / "NCP_341_1834_0022.png")
    assert r.meta["slice_index"] == 22
    assert [r.meta["official_split"] for r in m] == ["train"] * 4 + ["val"] + ["test"] * 2
    assert [r.id for r in open_dataset("covidx-ct", root, split="val")] == ["CP_5_200_0001.png"]


def test_covidx_ct_series(ds):
    root = ds.covidx_ct()
    m = open_dataset("covidx-ct", root, level="series")
    assert [r.id for r in m] == ["NCP_341_1834", "Normal_12_100", "STOIC-7", "CP_5_200", "COVIDCTMD-P041"]
    ncp = m[0]
    assert ncp.image == [str(root / "2A_images" / f"NCP_341_1834_{i:04d}.png") for i in (21, 22)]
    assert ncp.meta["slice_index"] == [21, 22]
    assert ncp.meta["bboxes"] == [(1, 131, 511, 430), (0, 130, 512, 429)]
    assert ncp.meta["source"] == (str(root / "train_COVIDx_CT-2A.txt"), 1)
    assert ncp.labels["covid"] == 2
    md = m[4]  # slices labelled 2 and 1: the scan takes the highest class
    assert md.meta["slice_labels"] == [1, 2]
    assert md.labels["covid"] == 2
    assert md.meta["slice_index"] == [40, 41]


@pytest.mark.parametrize("line,reason", [
    ("NCP_1_2_0003.png 3 0 0 10 10", "unknown label 3"),
    ("NCP_1_2_0003.png 2 0 0 10", "expected 6 fields"),
    ("NCP_1_2_0003.png 2 0 0 a 10", "must be integers"),
    ("NCP_1_2_0003.png 2 10 0 5 10", "bad crop box"),
    ("Normal_12_100_0005.png 0 10 20 500 480", "duplicate record id"),
    ("NCP_9_9_0001.png 2 0 0 10 10", "image not found"),
    ("nosliceindex.png 2 0 0 10 10", "no slice index"),
])
def test_covidx_ct_bad_lines(ds, line, reason):
    files = dict(COVIDX_CT)
    files["val_COVIDx_CT-2A.txt"] = [COVIDX_CT["val_COVIDx_CT-2A.txt"][0], line]
    root = ds.covidx_ct(files=files)
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("covidx-ct", root)
    assert str(info.value).startswith(f"{root / 'val_COVIDx_CT-2A.txt'}:2: ")
    assert reason in str(info.value)


def test_covidx_ct_duplicate_slice_index_in_series(ds):
    files = dict(COVIDX_CT)
    files["test_COVIDx_CT-2A.txt"] = [*COVIDX_CT["test_COVIDx_CT-2A.txt"], "COVIDCTMD-P041-0041.png 2 0 0 9 9"]
    root = ds.covidx_ct(files=files)
    write_image(root / "2A_images" / "COVIDCTMD-P041-0041.png")
    assert len(open_dataset("covidx-ct", root)) == 8
    with pytest.raises(DatasetFormatError, match=r"test_COVIDx_CT-2A.txt:\d: scan 'COVIDCTMD-P041' has slice index 41"):
        open_dataset("covidx-ct", root, level="series")
