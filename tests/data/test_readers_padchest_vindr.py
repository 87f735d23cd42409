"""PadChest (stringified label lists) and VinDr-CXR (per-radiologist box rows) readers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medzoo.data import DatasetFormatError, open_dataset
from medzoo.data.padchest_terms import PADCHEST_LABELS
from medzoo.data.readers.vindr import VINDR_LABELS
from tests.data.dataset_fixtures import PADCHEST_ROWS, VINDR_ROWS


def _ones(vec: np.ndarray) -> list[str]:
    return [PADCHEST_LABELS[i] for i in np.flatnonzero(vec == 1)]


def test_padchest_labels(ds):
    root = ds.padchest()
    m = open_dataset("padchest", root, views="*")
    assert m.label_names["findings"] == PADCHEST_LABELS
    assert [_ones(r.labels["findings"]) for r in m] == [["normal"], ["cardiomegaly", "pleural effusion"],
                                                       ["cardiomegaly"], []]
    assert [int((r.labels["findings"] == 0).sum()) for r in m] == [192, 191, 192, 0]
    assert [r.meta["labelled"] for r in m] == [True, True, True, False]
    assert [r.patient_id for r in m] == ["pat1", "pat1", "pat2", "pat3"]
    assert m[2].image == os.path.join(root, "1", "img_c.png")
    assert m[1].meta["projection"] == "L"
    assert m[1].meta["source"] == (str(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"), 3)


def test_padchest_exclude_and_default_views(ds):
    root = ds.padchest()
    assert [r.id for r in open_dataset("padchest", root, exclude=["img_d.png"])] == ["img_a.png", "img_c.png"]
    with pytest.raises(ValueError, match="label_space must be 'padchest' or 'cxr'"):
        open_dataset("padchest", root, label_space="nih")


@pytest.mark.parametrize("cell,reason", [
    ("\"['pleural effusion'\"", "expected a list literal"),
    ("\"{'a': 1}\"", "expected a list of strings"),
    ("__import__('os')", "expected a list literal"),
])
def test_padchest_bad_label_cell(ds, cell, reason):
    bad = PADCHEST_ROWS[2].rsplit(",\"", 1)[0] + "," + cell
    root = ds.padchest(rows=[PADCHEST_ROWS[0], bad])
    with pytest.raises(DatasetFormatError, match=r"labels_160K_01.02.19.csv:3: column 'Labels': " + reason):
        open_dataset("padchest", root)


def test_padchest_missing_image(ds):
    root = ds.padchest(rows=[PADCHEST_ROWS[0], PADCHEST_ROWS[1].replace("img_b", "img_z")])
    with pytest.raises(DatasetFormatError, match=r"160K_01.02.19.csv:3: image not found"):
        open_dataset("padchest", root)


def test_vindr_consensus_and_boxes(ds):
    root = ds.vindr()
    m = open_dataset("vindr-cxr", root)
    assert m.label_names["findings"] == VINDR_LABELS
    normal, sick = m
    assert normal.image.endswith("train/50a418190bc3fb1ef1633bf9678929b3.dicom")
    assert sick.image.endswith("train/9a5094b2563a1ef3ff50dc5c7ff71345.png")
    np.testing.assert_array_equal(normal.labels["findings"], np.zeros(14))
    assert normal.meta["boxes"] == {"R11": [], "R7": [], "R10": []}
    cardio, aortic = VINDR_LABELS.index("Cardiomegaly"), VINDR_LABELS.index("Aortic enlargement")
    assert (cardio, aortic) == (3, 0)
    want_any = np.zeros(14, dtype=np.float32)
    want_any[[cardio, aortic]] = 1
    np.testing.assert_array_equal(sick.labels["findings"], want_any)
    assert sick.meta["votes"][cardio] == 2
    assert sick.meta["votes"][aortic] == 1
    assert sick.meta["radiologists"] == ["R10", "R9", "R8"]
    assert [(b["label"], b["box"]) for b in sick.meta["boxes"]["R10"]] == [
        ("Cardiomegaly", (691.0, 1375.0, 1653.0, 1831.0)), ("Aortic enlargement", (1264.0, 743.0, 1611.0, 1019.0))]
    assert sick.meta["boxes"]["R8"] == []
    assert sick.meta["source"] == (str(root / "train.csv"), 5)
    majority = open_dataset("vindr-cxr", root, consensus="majority")[1].labels["findings"]
    np.testing.assert_array_equal(np.flatnonzero(majority), [cardio])
    assert not open_dataset("vindr-cxr", root, consensus="all")[1].labels["findings"].any()


@pytest.mark.parametrize("row,reason", [
    ("9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegally,3,R9,1,2,3,4", "unknown class_name 'Cardiomegally'"),
    ("9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,4,R9,1,2,3,4", "class_id '4' does not match"),
    ("9a5094b2563a1ef3ff50dc5c7ff71345,No finding,14,R9,1,2,3,4", "must have empty box fields"),
    ("9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R9,1,2,3", "wrong number of fields: got 7, expected 8"),
    ("9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R9,5,2,3,4", "bad box"),
    ("ffff,Cardiomegaly,3,R9,1,2,3,4", "image not found"),
])
def test_vindr_bad_rows(ds, row, reason):
    root = ds.vindr(rows=[*VINDR_ROWS[:3], row, *VINDR_ROWS[3:]])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("vindr-cxr", root)
    assert str(info.value).startswith(f"{root / 'train.csv'}:4: ")
    assert reason in str(info.value)
    skipped = open_dataset("vindr-cxr", root, on_error="skip")
    assert len(skipped) == 2
    assert [s.line for s in skipped.skipped] == [4]


def test_vindr_header_without_class_id(ds):
    rows = [",".join(f for i, f in enumerate(r.split(",")) if i != 2) for r in VINDR_ROWS]
    assert rows[0] == "image_id,class_name,rad_id,x_min,y_min,x_max,y_max"
    m = open_dataset("vindr-cxr", ds.vindr(rows=rows))
    ref = open_dataset("vindr-cxr", ds.vindr())
    for a, b in zip(m, ref):
        np.testing.assert_array_equal(a.labels["findings"], b.labels["findings"])
        assert a.meta["radiologists"] == b.meta["radiologists"]
