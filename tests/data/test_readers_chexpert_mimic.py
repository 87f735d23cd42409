"""CheXpert and MIMIC-CXR-JPG readers: CheXpert coding, uncertainty policies, path rules, joins and splits."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medzoo.data import DatasetFormatError, open_dataset
from medzoo.data.readers.chexpert import CHEXPERT_LABELS
from tests.data.dataset_fixtures import CHEXPERT_HEADER, CHEXPERT_TRAIN, MIMIC_META, write_lines

n, U = np.nan, -7.0  # U marks an uncertain cell, replaced per policy below
TRAIN = [
    [1, n, n, n, n, n, n, n, n, 0, n, n, n, 1],
    [n, n, U, 1, n, U, U, n, U, n, U, n, 1, n],
    [n, n, n, 1, n, n, n, n, n, n, n, n, 1, n],
]
VALID = [[0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]


def expected(rows, u):
    out = np.array(rows, dtype=np.float32)
    out[out == U] = u
    return out


@pytest.mark.parametrize("policy,u", [("u-ignore", np.nan), ("u-zeros", 0.0), ("u-ones", 1.0)])
def test_chexpert_labels_under_each_policy(ds, policy, u):
    root = ds.chexpert()
    m = open_dataset("chexpert", root, uncertainty=policy)
    assert m.label_names["findings"] == CHEXPERT_LABELS == CHEXPERT_HEADER.split(",")[5:]
    got = np.stack([r.labels["findings"] for r in m])
    np.testing.assert_array_equal(got, expected(TRAIN + VALID, u))
    assert [r.patient_id for r in m] == ["patient00001", "patient00002", "patient00002", "patient64541"]
    assert [r.meta["official_split"] for r in m] == ["train"] * 3 + ["valid"]
    assert m[1].meta["source"] == (str(root / "train.csv"), 3)
    assert m[1].meta["study"] == "study2" and m[1].meta["view"] == "Frontal" and m[1].meta["age"] == 87


def test_chexpert_paths_resolve_per_decision_9(ds):
    root = ds.chexpert()  # root is named CheXpert-v1.0-small: resolve against its parent
    m = open_dataset("chexpert", root)
    assert m[0].image == os.path.join(root, "train/patient00001/study1/view1_frontal.jpg")
    renamed = ds.chexpert(folder="my-chexpert")  # renamed root: strip the first component
    m2 = open_dataset("chexpert", renamed)
    assert m2[0].image == os.path.join(renamed, "train/patient00001/study1/view1_frontal.jpg")
    assert all(os.path.exists(r.image) for r in m2)


def test_chexpert_split_and_frontal_only(ds):
    root = ds.chexpert()
    valid = open_dataset("chexpert", root, split="valid")
    assert [r.patient_id for r in valid] == ["patient64541"] and valid.split == "valid"
    frontal = open_dataset("chexpert", root, frontal_only=True, split="train")
    assert [r.id.rsplit("/", 1)[1] for r in frontal] == ["view1_frontal.jpg", "view1_frontal.jpg"]
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        open_dataset("chexpert", root, uncertainty="u-maybe")


@pytest.mark.parametrize("row,reason", [
    (CHEXPERT_TRAIN[1].replace("-1.0,1.0", "2.0,1.0", 1), "column 'Cardiomegaly': unknown label value '2.0'"),
    (CHEXPERT_TRAIN[1].rstrip(","), "wrong number of fields: got 18, expected 19"),
    (CHEXPERT_TRAIN[1].replace("patient00002/study2/view1", "patient00002/study2/view9"), "image not found"),
    (CHEXPERT_TRAIN[1].replace("CheXpert-v1.0-small/train", "CheXpert-v1.0-small/../../etc"), "escapes"),
    (CHEXPERT_TRAIN[1].replace("patient00002/", "p2/"), "no patientNNNNN folder"),
])
def test_chexpert_bad_rows(ds, row, reason):
    root = ds.chexpert(train=[CHEXPERT_TRAIN[0], row])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("chexpert", root)
    assert str(info.value).startswith(f"{root / 'train.csv'}:3: ") and reason in str(info.value)


def test_chexpert_unknown_column(ds):
    root = ds.chexpert()
    write_lines(root / "valid.csv", [CHEXPERT_HEADER.replace("Fracture", "Fractures")])
    with pytest.raises(DatasetFormatError, match=r"valid.csv:1: unknown column 'Fractures'"):
        open_dataset("chexpert", root)


def test_chexpert_skip(ds):
    root = ds.chexpert(train=[CHEXPERT_TRAIN[0], CHEXPERT_TRAIN[1].replace("1.0,,-1.0,-1.0", "x,,-1.0,-1.0"),
                              CHEXPERT_TRAIN[2]])
    m = open_dataset("chexpert", root, on_error="skip")
    assert len(m) == 3 and [(s.line, "unknown label value 'x'" in s.reason) for s in m.skipped] == [(3, True)]


MIMIC_COLS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
              "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
              "Pneumothorax", "Support Devices"]


def test_mimic_join_labels_per_study(ds):
    root = ds.mimic()
    m = open_dataset("mimic-cxr-jpg", root, uncertainty="u-zeros")
    assert m.label_names["findings"] == MIMIC_COLS
    nf = np.full(14, np.nan, dtype=np.float32)
    nf[8] = 1
    second = np.full(14, np.nan, dtype=np.float32)
    second[[1, 3, 9]] = [1, 0, 1]
    for r, want in zip(m, [nf, nf, second, np.full(14, np.nan)]):
        np.testing.assert_array_equal(r.labels["findings"], want)
    assert [r.meta["labelled"] for r in m] == [True, True, True, False]
    assert [r.patient_id for r in m] == ["10000032"] * 3 + ["10000764"]
    assert m[0].image == os.path.join(root, "files/p10/p10000032/s50414267", m[0].id + ".jpg")
    assert [r.meta["official_split"] for r in m] == ["train", "train", "train", "test"]
    assert [r.id for r in open_dataset("mimic-cxr-jpg", root, split="test")] == [m[3].id]
    assert len(open_dataset("mimic-cxr-jpg", root, frontal_only=True)) == 3


def test_mimic_missing_image_names_metadata_line(ds):
    bad = MIMIC_META[2].replace("2a2277a9", "ffffffff")
    root = ds.mimic(meta=[MIMIC_META[0], MIMIC_META[1], bad, MIMIC_META[3]])
    with pytest.raises(DatasetFormatError, match=r"mimic-cxr-2.0.0-metadata.csv:4: image not found"):
        open_dataset("mimic-cxr-jpg", root)
    m = open_dataset("mimic-cxr-jpg", root, on_error="skip")
    assert len(m) == 3 and [s.line for s in m.skipped] == [4]
