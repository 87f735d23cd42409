"""COVID severity (both scales), MSD dataset.json, MedicalNet list files and NIfTI folders."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medzoo.data import DatasetFormatError, open_dataset
from tests.data.dataset_fixtures import COHEN_SEVERITY, write_lines, write_nifti


def test_severity_cohen_scale(ds):
    root = ds.severity(scale="cohen")
    m = open_dataset("covid-severity", root)
    assert m.label_names == {"severity": ["geographic", "opacity"]}
    np.testing.assert_allclose(np.stack([r.labels["severity"] for r in m]),
                               [[6.0, 4.0], [2.3333333333333335, 1.6666666666666667]], rtol=1e-6)
    assert [r.patient_id for r in m] == ["2", m[1].id]  # from metadata.csv, else the image itself
    assert m[0].meta["scale"] == "cohen"
    assert m[0].meta["ranges"] == {"geographic": (0, 8), "opacity": (0, 6)}
    assert m[0].meta["source"] == (str(root / "annotations" / "covid-severity-scores.csv"), 7)
    assert m[0].image == str(root / "images" / "01E392EE-69F9-4E33-BFCE-E5C968654078.jpeg")


def test_severity_covidnet_s_scale_is_named_apart(ds):
    root = ds.severity(scale="covidnet-s")
    m = open_dataset("covid-severity", root)
    assert m.label_names == {"severity": ["geographic", "opacity_0_8"]}
    np.testing.assert_array_equal(m[0].labels["severity"], [4, 7])
    assert np.isnan(m[1].labels["severity"]).all()  # unscored row kept, NaN
    assert [r.patient_id for r in m] == ["19", "A1"]
    assert m[0].meta["scale"] == "covidnet-s"


@pytest.mark.parametrize("row,reason", [
    ("01E392EE-69F9-4E33-BFCE-E5C968654078.jpeg,6.0,6.5", "outside the opacity range 0-6"),
    ("01E392EE-69F9-4E33-BFCE-E5C968654078.jpeg,six,4", "expected a number, got 'six'"),
    ("nope.jpeg,1,1", "image not found: 'nope.jpeg'"),
    ("01E392EE-69F9-4E33-BFCE-E5C968654078.jpeg,1", "wrong number of fields"),
])
def test_severity_bad_rows(ds, row, reason):
    root = ds.severity(rows=[*COHEN_SEVERITY[:7], row])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("covid-severity", root)
    assert str(info.value).startswith(f"{root / 'annotations' / 'covid-severity-scores.csv'}:8: ")
    assert reason in str(info.value)


def test_severity_unknown_header(ds):
    root = ds.severity(scale="covidnet-s", rows=["filename,Geo,Opa", "cohen1.jpeg,1,1"])
    with pytest.raises(DatasetFormatError, match=r"severity_annotations.csv:1: unrecognised severity header"):
        open_dataset("covid-severity", root)


def test_msd(ds):
    root = ds.msd()
    m = open_dataset("msd", root)
    assert m.label_names == {"segmentation": ["background", "cancer"]}
    assert [r.id for r in m] == ["lung_001", "lung_003", "lung_002"]
    assert m[0].image == str(root / "imagesTr" / "lung_001.nii.gz")
    assert m[0].meta["mask"] == str(root / "labelsTr" / "lung_001.nii.gz")
    assert "mask" not in m[2].meta
    assert m[2].meta["official_split"] == "test"
    lines = (root / "dataset.json").read_text().splitlines()
    assert '"./imagesTr/lung_003.nii.gz"' in lines[m[1].meta["source"][1] - 1]
    assert [r.id for r in open_dataset("msd", root, split="training")] == ["lung_001", "lung_003"]


@pytest.mark.parametrize("entry,reason", [
    ({"image": "./imagesTr/lung_009.nii.gz", "label": "./labelsTr/lung_001.nii.gz"}, "image not found"),
    ({"image": "./imagesTr/lung_001.nii.gz", "label": "./labelsTr/lung_009.nii.gz"}, "label not found"),
    ({"image": "../outside/lung_001.nii.gz", "label": "./labelsTr/lung_001.nii.gz"}, "escapes the dataset folder"),
])
def test_msd_bad_entries_name_the_line(ds, entry, reason):
    root = ds.msd()
    data = json.loads((root / "dataset.json").read_text())
    data["training"].append(entry)
    write_lines(root / "dataset.json", json.dumps(data, indent=4).splitlines())
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("msd", root)
    line = info.value.line
    assert reason in str(info.value)
    assert line is not None
    lines = (root / "dataset.json").read_text().splitlines()
    assert json.dumps(entry["image"]) in lines[line - 1]
    assert line > max(i for i, t in enumerate(lines, 1) if "lung_003" in t)  # the appended entry, not the first


def test_msd_invalid_json(ds):
    root = ds.msd()
    (root / "dataset.json").write_text('{\n "training": [\n  {"image": }\n]}\n')
    with pytest.raises(DatasetFormatError, match=r"dataset.json:3: invalid JSON"):
        open_dataset("msd", root)


def test_medicalnet_list(ds):
    path = ds.medicalnet()
    m = open_dataset("medicalnet-list", path)
    assert [r.id for r in m] == ["070", "071"]
    assert m[0].image == str(path.parent / "MRBrainS18" / "images" / "070.nii.gz")
    assert m[0].meta["mask"] == str(path.parent / "MRBrainS18" / "labels" / "070.nii.gz")
    test_list = write_lines(path.parent / "test.txt", ["MRBrainS18/images/071.nii.gz"])
    assert "mask" not in open_dataset("medicalnet-list", test_list)[0].meta


@pytest.mark.parametrize("line,reason", [
    ("MRBrainS18/images/070.nii.gz  MRBrainS18/labels/070.nii.gz", "separated by one space"),
    ("MRBrainS18/images/070.nii.gz MRBrainS18/labels/070.nii.gz extra", "got 3 fields"),
    ("../../etc/passwd", "escapes the dataset folder"),
    ("/abs/070.nii.gz", "absolute path"),
    ("MRBrainS18/images/099.nii.gz", "image not found"),
])
def test_medicalnet_bad_lines(ds, line, reason):
    path = ds.medicalnet(lines=["MRBrainS18/images/071.nii.gz MRBrainS18/labels/071.nii.gz", line])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("medicalnet-list", path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert reason in str(info.value)


def test_nifti_folder(ds):
    root = ds.nifti_folder()
    m = open_dataset("nifti-folder", root)
    assert [r.id for r in m] == ["a", "b"]  # the macOS ._a.nii.gz is ignored
    assert m[1].meta["mask"] == str(root / "labels" / "b.nii.gz")
    assert m[1].image == str(root / "images" / "b.nii.gz")


def test_nifti_folder_missing_label(ds):
    root = ds.nifti_folder(label_names=("a", "c"))
    with pytest.raises(DatasetFormatError, match=r"c.nii.gz: label without an image"):
        open_dataset("nifti-folder", root)
    m = open_dataset("nifti-folder", root, on_error="skip")
    assert [r.id for r in m] == ["a"]
    assert len(m.skipped) == 2
    assert any(s.path.endswith("images/b.nii.gz") and "no label" in s.reason for s in m.skipped)


def test_nifti_folder_csv_manifest(ds, tmp_path):
    root = ds.nifti_folder()
    write_nifti(tmp_path / "elsewhere" / "z.nii")
    csv = write_lines(root / "manifest.csv", ["image,label,patient_id", "images/a.nii.gz,labels/a.nii.gz,P1",
                                              f"{tmp_path / 'elsewhere' / 'z.nii'},,P2"])
    m = open_dataset("nifti-folder", root)
    assert [(r.id, r.patient_id) for r in m] == [("a", "P1"), ("z", "P2")]
    assert m[0].meta["mask"] == os.path.join(root, "labels", "a.nii.gz")
    assert "mask" not in m[1].meta
    assert [r.id for r in open_dataset("nifti-folder", csv)] == ["a", "z"]
    write_lines(csv, ["image,label", "images/a.nii.gz,labels/nope.nii.gz"])
    with pytest.raises(DatasetFormatError, match=r"manifest.csv:2: label not found"):
        open_dataset("nifti-folder", root)


def test_nifti_folder_duplicate_volume_names(ds, caplog):
    root = ds.nifti_folder()
    write_nifti(root / "images" / "a.nii")
    (root / "images" / "README.txt").write_text("notes")
    with pytest.raises(DatasetFormatError, match=r"images/a.nii.gz: two volumes named 'a'"):
        open_dataset("nifti-folder", root)
    m = open_dataset("nifti-folder", root, on_error="skip")
    assert [r.image for r in m] == [str(root / "images" / "a.nii"), str(root / "images" / "b.nii.gz")]
    assert "ignoring 1 non-NIfTI file(s)" in caplog.text
