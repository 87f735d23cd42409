"""The generic "paths plus label columns" CSV reader (issue 12), and open_dataset's dispatch rules."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from medzoo.data import DatasetFormatError, list_datasets, open_dataset
from tests.data.dataset_fixtures import write_image, write_lines

KINDS = ["chexpert", "covid-severity", "covidx-ct", "covidx-cxr", "csv", "medicalnet-list", "mimic-cxr-jpg",
         "montgomery", "msd", "nifti-folder", "nih-cxr14", "padchest", "rsna-pneumonia", "shenzhen", "tbx11k",
         "vindr-cxr"]


@pytest.fixture
def table(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png"):
        write_image(tmp_path / "imgs" / name)

    def write(rows: list[str]):
        return write_lines(tmp_path / "imgs" / "labels.csv", ["file,patient,effusion,mass,grade,score", *rows])
    return write


ROWS = ["a.png,P1,1,0,mild,0.5", "b.png,P1,0,,severe,", "sub/c.png,P2,,1,mild,2.25"]


def test_multilabel(table):
    path = table(ROWS)
    m = open_dataset("csv", path, image_col="file", label_cols=["effusion", "mass"], task="findings",
                     type="multilabel", patient_col="patient")
    assert m.label_names == {"findings": ["effusion", "mass"]}
    np.testing.assert_array_equal(np.stack([r.labels["findings"] for r in m]),
                                  np.array([[1, 0], [0, np.nan], [np.nan, 1]], dtype=np.float32))
    assert [r.patient_id for r in m] == ["P1", "P1", "P2"]
    assert m[2].image == str(path.parent / "sub" / "c.png")
    assert m[2].id == "sub/c.png"
    assert m[0].meta["columns"] == {"grade": "mild", "score": "0.5"}
    assert m[0].meta["source"] == (str(path), 2)


def test_class_and_regression(table):
    path = table(ROWS)
    cls = open_dataset("csv", path, image_col="file", label_cols="grade", task="grade", type="class")
    assert cls.label_names == {"grade": ["mild", "severe"]}
    assert [r.labels["grade"] for r in cls] == [0, 1, 0]
    assert [r.patient_id for r in cls] == ["a.png", "b.png", "sub/c.png"]  # no patient_col: per image
    cls2 = open_dataset("csv", path, image_col="file", label_cols=["grade"], task="grade", type="class",
                        classes=["severe", "mild", "moderate"])
    assert [r.labels["grade"] for r in cls2] == [1, 0, 1]
    reg = open_dataset("csv", path, image_col="file", label_cols=["score"], task="score", type="regression")
    got = [r.labels["score"] for r in reg]
    assert got[0][0] == 0.5
    assert np.isnan(got[1][0])
    assert got[2][0] == 2.25


@pytest.mark.parametrize("kw,row,reason", [
    ({"type": "multilabel", "label_cols": ["effusion"]}, "b.png,P1,2,,severe,", "column 'effusion': unknown label "
     "value '2'; expected 1, 0 or blank"),
    ({"type": "class", "label_cols": "grade", "classes": ["mild", "severe"]}, "b.png,P1,0,,moderate,",
     "column 'grade': unknown label 'moderate'"),
    ({"type": "regression", "label_cols": ["score"]}, "b.png,P1,0,,severe,high", "expected a number, got 'high'"),
    ({"type": "regression", "label_cols": ["score"]}, "b.png,P1,0,,severe", "wrong number of fields: got 5, "
     "expected 6"),
    ({"type": "regression", "label_cols": ["score"]}, "zz.png,P1,0,,severe,1", "image not found"),
    ({"type": "regression", "label_cols": ["score"]}, "../../x.png,P1,0,,severe,1", "escapes the dataset folder"),
    ({"type": "regression", "label_cols": ["score"], "patient_col": "patient"}, "b.png,,0,,severe,1",
     "empty patient id"),
])
def test_csv_errors_name_file_and_line(table, kw, row, reason):
    path = table([ROWS[0], row])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("csv", path, image_col="file", task="t", **kw)
    assert str(info.value).startswith(f"{path}:3: ")
    assert reason in str(info.value)
    m = open_dataset("csv", path, image_col="file", task="t", on_error="skip", **kw)
    assert len(m) == 1
    assert [(s.path, s.line) for s in m.skipped] == [(str(path), 3)]


def test_csv_missing_column_and_bad_options(table):
    path = table(ROWS)
    with pytest.raises(DatasetFormatError, match=rf"{path}:1: missing column 'nodule'"):
        open_dataset("csv", path, image_col="file", label_cols=["nodule"], task="t")
    with pytest.raises(ValueError, match="type must be one of"):
        open_dataset("csv", path, image_col="file", label_cols=["mass"], task="t", type="ordinal")
    with pytest.raises(ValueError, match="exactly one label column"):
        open_dataset("csv", path, image_col="file", label_cols=["mass", "grade"], task="t", type="class")


def test_registry_and_options(ds):
    assert list_datasets() == KINDS
    assert list_datasets("covidx-*") == ["covidx-ct", "covidx-cxr"]
    with pytest.raises(KeyError, match="Did you mean 'nih-cxr14'"):
        open_dataset("nih-cxr15", ds.nih())
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['uncertainty'\]; valid options: \['boxes'"):
        open_dataset("nih-cxr14", ds.nih(), uncertainty="u-ones")
    with pytest.raises(ValueError, match="on_error must be"):
        open_dataset("nih-cxr14", ds.nih(), on_error="ignore")


def test_import_is_light():
    import subprocess

    code = "import sys, medzoo.data; print(sorted(m for m in ('torch', 'monai', 'PIL', 'nibabel') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_utf8_bom_and_crlf(table, tmp_path):
    path = tmp_path / "imgs" / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbffile,effusion\r\na.png,1\r\n")
    m = open_dataset("csv", path, image_col="file", label_cols=["effusion"], task="findings")
    assert m.label_names == {"findings": ["effusion"]}
    assert m[0].labels["findings"][0] == 1


def test_mask_column(table, tmp_path):
    write_image(tmp_path / "imgs" / "masks" / "a.png")
    path = table([ROWS[0] + ",masks/a.png", ROWS[1] + ","])
    lines = path.read_text().splitlines()
    write_lines(path, [lines[0] + ",mask", *lines[1:]])
    m = open_dataset("csv", path, image_col="file", label_cols=["score"], task="severity", type="regression",
                     mask_col="mask")
    assert m[0].meta["mask"] == [str(tmp_path / "imgs" / "masks" / "a.png")]
    assert "mask" not in m[1].meta
    assert "mask" not in m[0].meta["columns"]
    write_lines(path, [lines[0] + ",mask", ROWS[0] + ",masks/zz.png"])
    with pytest.raises(DatasetFormatError, match=rf"{path}:2: mask not found"):
        open_dataset("csv", path, image_col="file", label_cols=["score"], task="s", type="regression", mask_col="mask")


def test_read_csv_rfc4180_records_and_their_first_lines(tmp_path):
    from medzoo.data.manifest import ErrorCollector
    from medzoo.data.readers._common import read_csv

    path = tmp_path / "notes.csv"
    path.write_bytes(b'\xef\xbb\xbf# a comment\r\nid,note\r\n1,"a, b"\r\n\r\n2,"two\r\nlines ""quoted"""\r\n'
                     b'3,"never closed\r\n4,last\r\n')
    errors = ErrorCollector("skip")
    table = read_csv(path, errors, comment="#")
    assert (table.header, table.header_line) == (["id", "note"], 2)
    assert table.rows == [(3, ["1", "a, b"]), (5, ["2", 'two\r\nlines "quoted"']), (8, ["4", "last"])]
    assert [(s.line, s.reason) for s in errors.skipped] == [
        (7, "malformed CSV record (a quoted field opened here is never closed)")]
    with pytest.raises(DatasetFormatError, match=r"notes.csv:7: malformed CSV record"):
        read_csv(path, ErrorCollector("raise"), comment="#")
