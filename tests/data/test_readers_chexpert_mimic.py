"""CheXpert and MIMIC-CXR-JPG readers: the No Finding rules, blank and uncertainty policies, views, paths, joins.

Rows are in the real ``train.csv`` / ``mimic-cxr-2.0.0-chexpert.csv`` layouts (the first CheXpert rows are the real
file's first rows). Expected vectors are written out by hand; the TorchXRayVision convention is re-implemented
independently in :func:`txv_reference` from its documented rules.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from medzoo.data import DatasetFormatError, open_dataset
from medzoo.data.readers.chexpert import CHEXPERT_LABELS
from tests.data.dataset_fixtures import CHEXPERT_HEADER, CHEXPERT_TRAIN, MIMIC_META, write_lines

n, U = np.nan, -7.0  # U marks an uncertain cell, replaced per policy below
# Columns: No Finding, Enlarged Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung Lesion, Edema, Consolidation,
# Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other, Fracture, Support Devices.
RAW = {  # the files' cells: 1 / 0 / -1 (as U) / blank (n)
    "p1": [1, n, n, n, n, n, n, n, n, 0, n, n, n, 1],
    "p2f": [n, n, U, 1, n, U, U, n, U, n, U, n, 1, n],
    "p2l": [n, n, n, 1, n, n, n, n, n, n, n, n, 1, n],
    "valid": [0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
}
# blank="zero": p1 -> No Finding rule zeroes the 12 pathologies, Support Devices keeps its 1;
# p2 -> a blank No Finding next to positives/uncertains becomes 0, other blanks 0.
ZERO = {
    "p1": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    "p2f": [0, 0, U, 1, 0, U, U, 0, U, 0, U, 0, 1, 0],
    "p2l": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    "valid": RAW["valid"],
}
NAN = {  # blank="nan": the same rules, other blanks stay NaN
    "p1": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    "p2f": [0, n, U, 1, n, U, U, n, U, n, U, n, 1, n],
    "p2l": [0, n, n, 1, n, n, n, n, n, n, n, n, 1, n],
    "valid": RAW["valid"],
}
POLICIES = [("u-ignore", np.nan), ("u-zeros", 0.0), ("u-ones", 1.0)]


def expected(rows: list[list[float]], u: float) -> np.ndarray:
    out = np.array(rows, dtype=np.float32)
    out[out == U] = u
    return out


def txv_reference(raw: list[float]) -> np.ndarray:
    """TorchXRayVision's CheX_Dataset rules: healthy rows zero every pathology but Support Devices; -1 -> NaN."""
    row = np.where(np.array(raw, dtype=np.float64) == U, -1.0, np.array(raw, dtype=np.float64))
    if row[0] == 1:
        row[1:13] = 0
    row[row == -1] = np.nan
    return row[1:]  # TorchXRayVision drops the No Finding column


def stack(m) -> np.ndarray:
    return np.stack([r.labels["findings"] for r in m])


@pytest.mark.parametrize("policy,u", POLICIES)
def test_chexpert_default_blank_zero(ds, policy, u):
    m = open_dataset("chexpert", ds.chexpert(), uncertainty=policy, views="*")
    assert m.label_names["findings"] == CHEXPERT_LABELS == CHEXPERT_HEADER.split(",")[5:]
    np.testing.assert_array_equal(stack(m), expected([ZERO[k] for k in RAW], u))


@pytest.mark.parametrize("policy,u", POLICIES)
def test_chexpert_blank_nan(ds, policy, u):
    m = open_dataset("chexpert", ds.chexpert(), uncertainty=policy, blank="nan", views="*")
    np.testing.assert_array_equal(stack(m), expected([NAN[k] for k in RAW], u))


def test_blank_nan_u_ignore_matches_torchxrayvision_except_no_finding(ds):
    m = open_dataset("chexpert", ds.chexpert(), blank="nan", views="*")
    np.testing.assert_array_equal(stack(m)[:, 1:], np.stack([txv_reference(RAW[k]) for k in RAW]))


def test_no_finding_column_gets_negatives(ds):
    nf = stack(open_dataset("chexpert", ds.chexpert(), blank="nan", views="*"))[:, 0]
    np.testing.assert_array_equal(nf, [1, 0, 0, 0])


def test_conflicting_no_finding_row_is_overridden_and_logged(ds, caplog):
    bad = CHEXPERT_TRAIN[0].replace(",0.0,,,,1.0", ",1.0,,,,1.0")  # No Finding 1 and Pneumothorax 1
    with caplog.at_level(logging.WARNING):
        m = open_dataset("chexpert", ds.chexpert(train=[bad]), split="train")
    np.testing.assert_array_equal(m[0].labels["findings"], ZERO["p1"])
    assert "1 row(s) have No Finding = 1 next to a positive or uncertain pathology" in caplog.text


def test_chexpert_meta_and_patients(ds):
    root = ds.chexpert()
    m = open_dataset("chexpert", root, views="*")
    assert [r.patient_id for r in m] == ["patient00001", "patient00002", "patient00002", "patient64541"]
    assert [r.meta["official_split"] for r in m] == ["train"] * 3 + ["valid"]
    assert [r.meta["view"] for r in m] == ["AP", "AP", "L", "AP"]
    assert m[1].meta["source"] == (str(root / "train.csv"), 3)
    assert (m[1].meta["study"], m[1].meta["frontal_lateral"], m[1].meta["age"]) == ("study2", "Frontal", 87)


def test_chexpert_views_default_frontal_and_logged(ds, caplog):
    root = ds.chexpert()
    with caplog.at_level(logging.INFO):
        m = open_dataset("chexpert", root)
    assert [r.id.rsplit("/", 1)[1] for r in m] == ["view1_frontal.jpg"] * 3
    assert "chexpert: kept 3 of 4 image(s) with views ['AP', 'PA']; left out 1 (L: 1)" in caplog.text
    assert [r.meta["view"] for r in open_dataset("chexpert", root, views=["L"])] == ["L"]
    with pytest.raises(ValueError, match="views must be"):
        open_dataset("chexpert", root, views=[""])


def test_chexpert_paths_resolve_inside_root(ds):
    root = ds.chexpert()  # root is named CheXpert-v1.0-small: resolve against its parent
    m = open_dataset("chexpert", root)
    assert m[0].image == os.path.join(root, "train/patient00001/study1/view1_frontal.jpg")
    renamed = ds.chexpert(folder="my-chexpert")  # renamed root: strip the first component
    m2 = open_dataset("chexpert", renamed)
    assert m2[0].image == os.path.join(renamed, "train/patient00001/study1/view1_frontal.jpg")


def test_chexpert_split_and_bad_options(ds):
    root = ds.chexpert()
    valid = open_dataset("chexpert", root, split="valid")
    assert [r.patient_id for r in valid] == ["patient64541"]
    assert valid.split == "valid"
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        open_dataset("chexpert", root, uncertainty="u-maybe")
    with pytest.raises(ValueError, match=r"blank must be one of \['nan', 'zero'\]"):
        open_dataset("chexpert", root, blank="ignore")


@pytest.mark.parametrize("row,reason", [
    (CHEXPERT_TRAIN[1].replace("-1.0,1.0", "2.0,1.0", 1), "column 'Cardiomegaly': unknown label value '2.0'"),
    (CHEXPERT_TRAIN[1].rstrip(","), "wrong number of fields: got 18, expected 19"),
    (CHEXPERT_TRAIN[1].replace("patient00002/study2/view1", "patient00002/study2/view9"), "image not found"),
    (CHEXPERT_TRAIN[1].replace("CheXpert-v1.0-small/train", "CheXpert-v1.0-small/../../etc"), "escapes"),
    (CHEXPERT_TRAIN[1].replace("patient00002/", "p2/"), "no patientNNNNN folder"),
    (CHEXPERT_TRAIN[1].replace("Frontal,AP", "Front,AP"), "column 'Frontal/Lateral': unknown value 'Front'"),
    (CHEXPERT_TRAIN[1].replace("Frontal,AP", "Frontal,XX"), "column 'AP/PA': unknown value 'XX'"),
])
def test_chexpert_bad_rows(ds, row, reason):
    root = ds.chexpert(train=[CHEXPERT_TRAIN[0], row])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("chexpert", root)
    assert str(info.value).startswith(f"{root / 'train.csv'}:3: ")
    assert reason in str(info.value)


def test_chexpert_unknown_column(ds):
    root = ds.chexpert()
    write_lines(root / "valid.csv", [CHEXPERT_HEADER.replace("Fracture", "Fractures")])
    with pytest.raises(DatasetFormatError, match=r"valid.csv:1: unknown column 'Fractures'"):
        open_dataset("chexpert", root)


def test_chexpert_skip(ds):
    root = ds.chexpert(train=[CHEXPERT_TRAIN[0], CHEXPERT_TRAIN[1].replace("1.0,,-1.0,-1.0", "x,,-1.0,-1.0"),
                              CHEXPERT_TRAIN[2]])
    m = open_dataset("chexpert", root, on_error="skip", views="*")
    assert len(m) == 3
    assert [(s.line, "unknown label value 'x'" in s.reason) for s in m.skipped] == [(3, True)]


MIMIC_COLS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
              "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
              "Pneumothorax", "Support Devices"]
# Study 50414267: No Finding 1, everything else blank. Study 53189527: Cardiomegaly 1, Edema -1, Effusion 1.
MIMIC_NF = {"zero": [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], "nan": [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, n]}
MIMIC_SICK = {"zero": [0, 1, 0, U, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], "nan": [n, 1, n, U, n, n, n, n, 0, 1, n, n, n, n]}


@pytest.mark.parametrize("policy,u", POLICIES)
@pytest.mark.parametrize("blank", ["zero", "nan"])
def test_mimic_rules_per_study(ds, policy, u, blank):
    m = open_dataset("mimic-cxr-jpg", ds.mimic(), uncertainty=policy, blank=blank, views="*")
    assert m.label_names["findings"] == MIMIC_COLS
    want = expected([MIMIC_NF[blank], MIMIC_NF[blank], MIMIC_SICK[blank], [n] * 14], u)
    np.testing.assert_array_equal(stack(m), want)


def test_mimic_join_meta_and_views(ds, caplog):
    root = ds.mimic()
    m = open_dataset("mimic-cxr-jpg", root, views="*")
    assert [r.meta["labelled"] for r in m] == [True, True, True, False]
    assert [r.patient_id for r in m] == ["10000032"] * 3 + ["10000764"]
    assert m[0].image == os.path.join(root, "files/p10/p10000032/s50414267", m[0].id + ".jpg")
    assert [r.meta["official_split"] for r in m] == ["train", "train", "train", "test"]
    assert [r.id for r in open_dataset("mimic-cxr-jpg", root, split="test")] == [m[3].id]
    with caplog.at_level(logging.INFO):
        frontal = open_dataset("mimic-cxr-jpg", root)
    assert [r.meta["view"] for r in frontal] == ["PA", "AP", "PA"]
    assert "left out 1 (LATERAL: 1)" in caplog.text


def test_mimic_blank_view_is_unknown(ds):
    row = MIMIC_META[0].replace("(PA AND LAT),PA,", "(PA AND LAT),,")
    m = open_dataset("mimic-cxr-jpg", ds.mimic(meta=[row, *MIMIC_META[1:]]), views="*")
    assert m[0].meta["view"] == "UNKNOWN"


def test_mimic_missing_image_names_metadata_line(ds):
    bad = MIMIC_META[2].replace("2a2277a9", "ffffffff")
    root = ds.mimic(meta=[MIMIC_META[0], MIMIC_META[1], bad, MIMIC_META[3]])
    with pytest.raises(DatasetFormatError, match=r"mimic-cxr-2.0.0-metadata.csv:4: image not found"):
        open_dataset("mimic-cxr-jpg", root)
    m = open_dataset("mimic-cxr-jpg", root, on_error="skip", views="*")
    assert len(m) == 3
    assert [s.line for s in m.skipped] == [4]


def test_mimic_view_filter_needs_the_view_column(ds):
    root = ds.mimic()
    lines = (root / "mimic-cxr-2.0.0-metadata.csv").read_text().splitlines()
    write_lines(root / "mimic-cxr-2.0.0-metadata.csv", [lines[0].replace("ViewPosition", "ViewPos"), *lines[1:]])
    with pytest.raises(DatasetFormatError, match=r"metadata.csv:1: missing column 'ViewPosition'"):
        open_dataset("mimic-cxr-jpg", root)
    assert len(open_dataset("mimic-cxr-jpg", root, views="*")) == 4
