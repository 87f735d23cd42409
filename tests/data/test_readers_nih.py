"""NIH ChestX-ray14 reader on fixture files in the real Data_Entry / BBox_List / split-list formats."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from medzoo.data import DatasetFormatError, open_dataset
from medzoo.data.readers.nih import NIH_LABELS
from tests.data.dataset_fixtures import NIH_BOXES, NIH_HEADER_2020, NIH_ROWS, write_lines


def vec(*names: str) -> np.ndarray:
    out = np.zeros(14, dtype=np.float32)
    for n in names:
        out[NIH_LABELS.index(n)] = 1
    return out


EXPECTED = {
    "00000001_000.png": vec("Cardiomegaly"),
    "00000001_001.png": vec("Cardiomegaly", "Emphysema"),
    "00000002_000.png": vec(),
    "00000003_000.png": vec("Hernia", "Pleural_Thickening"),
    "00000004_000.png": vec("Effusion", "Infiltration", "Mass"),
}


@pytest.mark.parametrize("variant,kaggle", [("v2020", False), ("2017", True)])
def test_labels_patients_and_meta(ds, variant, kaggle):
    root = ds.nih(variant=variant, kaggle_layout=kaggle)
    m = open_dataset("nih-cxr14", root)
    assert m.label_names == {"findings": NIH_LABELS}
    assert NIH_LABELS[12] == "Pleural_Thickening"
    assert [r.id for r in m] == list(EXPECTED)
    for r in m:
        np.testing.assert_array_equal(r.labels["findings"], EXPECTED[r.id])
        assert os.path.isabs(r.image)
        assert os.path.exists(r.image)
        assert r.image.endswith(("images_001/images/" if kaggle else "nih/images/") + r.id)
    assert [r.patient_id for r in m] == ["1", "1", "2", "3", "4"]
    r = m[1]
    assert r.meta["view"] == "PA"
    assert r.meta["sex"] == "M"
    assert r.meta["age"] == 58
    assert r.meta["original_size"] == (2894, 2729)
    assert r.meta["pixel_spacing"] == pytest.approx((0.143, 0.143))
    name = "Data_Entry_2017_v2020.csv" if variant == "v2020" else "Data_Entry_2017.csv"
    assert r.meta["source"] == (str(root / name), 3)


def test_boxes_infiltrate_spelling(ds):
    m = open_dataset("nih-cxr14", ds.nih())
    by_id = {r.id: r for r in m}
    boxes = by_id["00000004_000.png"].meta["boxes"]
    assert [(b["label"], b["box"]) for b in boxes] == [
        ("Infiltration", (225.08, 547.02, 86.78, 79.19)), ("Mass", (100.0, 200.0, 50.5, 60.0))]
    assert by_id["00000001_000.png"].meta["boxes"][0]["box"] == (300.0, 400.0, 500.0, 300.0)
    assert "boxes" not in by_id["00000002_000.png"].meta


def test_official_split(ds):
    root = ds.nih()
    test = open_dataset("nih-cxr14", root, split="test")
    assert [r.id for r in test] == ["00000003_000.png"]
    assert test.split == "test"
    train = open_dataset("nih-cxr14", root, split="train_val")
    assert len(train) == 4
    assert {r.meta["official_split"] for r in train} == {"train_val"}
    with pytest.raises(ValueError, match="unknown split 'bogus'"):
        open_dataset("nih-cxr14", root, split="bogus")


def test_split_without_lists_is_an_error(ds):
    with pytest.raises(DatasetFormatError, match="test_list.txt"):
        open_dataset("nih-cxr14", ds.nih(lists=False), split="test")


@pytest.mark.parametrize("row,reason", [
    ("00000002_000.png,Cardiomegally,0,2,81,M,PA,2500,2048,0.171,0.171", "unknown finding 'Cardiomegally'"),
    ("00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171", "wrong number of fields: got 10, expected 11"),
    ("00000009_000.png,No Finding,0,9,81,M,PA,2500,2048,0.171,0.171", "image not found: 00000009_000.png"),
    ("00000002_000.png,No Finding,0,2,eighty,M,PA,2500,2048,0.171,0.171", "'Patient Age': expected a number"),
    ('00000002_000.png,"No Finding,0,2,81,M,PA,2500,2048,0.171,0.171', "a quoted field opened here is never closed"),
])
def test_bad_rows_name_file_and_line(ds, row, reason):
    root = ds.nih(rows=[*NIH_ROWS[:2], row, *NIH_ROWS[3:]])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("nih-cxr14", root)
    assert str(info.value).startswith(f"{root / 'Data_Entry_2017_v2020.csv'}:4: ")
    assert reason in str(info.value)
    assert info.value.line == 4


def test_non_utf8_line(ds):
    root = ds.nih()
    path = root / "Data_Entry_2017_v2020.csv"
    lines = path.read_bytes().splitlines()
    lines[2] = lines[2].replace(b"Cardiomegaly", b"Cardiom\xe9galy")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DatasetFormatError, match=rf"{path}:3: not valid UTF-8 \(byte 0xe9 at column 25\)"):
        open_dataset("nih-cxr14", root)
    m = open_dataset("nih-cxr14", root, on_error="skip")
    assert "00000001_001.png" not in [r.id for r in m]
    assert len(m) == 4
    assert [(s.line, s.reason.startswith("not valid UTF-8")) for s in m.skipped] == [(3, True)]


def test_bad_box_label(ds):
    root = ds.nih(boxes=[*NIH_BOXES, "00000004_000.png,Infiltrates,1,2,3,4"])
    with pytest.raises(DatasetFormatError, match=r"BBox_List_2017.csv:5: unknown box label 'Infiltrates'"):
        open_dataset("nih-cxr14", root)


def test_bad_header(ds):
    root = ds.nih()
    write_lines(root / "Data_Entry_2017_v2020.csv", [NIH_HEADER_2020.replace("Patient ID", "PID"), *NIH_ROWS])
    with pytest.raises(DatasetFormatError, match=r"Data_Entry_2017_v2020.csv:1: unexpected Data_Entry header"):
        open_dataset("nih-cxr14", root)


def test_skip_reports_each_bad_record(ds, caplog):
    rows = [NIH_ROWS[0], "00000002_000.png,Foo,0,2,81,M,PA,2500,2048,0.171,0.171", NIH_ROWS[2],
            "00000009_000.png,No Finding,0,9,81,M,PA,2500,2048,0.171,0.171", NIH_ROWS[4]]
    root = ds.nih(rows=rows)
    with caplog.at_level(logging.WARNING):
        m = open_dataset("nih-cxr14", root, on_error="skip")
    assert [r.id for r in m] == ["00000001_000.png", "00000002_000.png", "00000004_000.png"]
    assert [(s.path, s.line) for s in m.skipped] == [(str(root / "Data_Entry_2017_v2020.csv"), 3),
                                                     (str(root / "Data_Entry_2017_v2020.csv"), 5)]
    assert "unknown finding 'Foo'" in m.skipped[0].reason
    assert "image not found" in m.skipped[1].reason
    assert "skipped 2 bad record(s)" in caplog.text
