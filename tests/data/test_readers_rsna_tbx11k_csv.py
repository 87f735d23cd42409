"""RSNA Pneumonia and TBX11K readers, RFC 4180 CSV parsing in every CSV reader, and COVIDx-CT patient merging.

Fixtures are the datasets' real layouts: the Kaggle RSNA CSVs (real first rows), the TBX11K COCO-style JSON as its
``make_json_anno.py`` writes it, and the real ``metadata.csv`` / ``Data_Entry`` headers.
"""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.data import CXR_VOCABULARY, DatasetFormatError, open_dataset, patient_split, relabel
from medzoo.data.readers.rsna import RSNA_CLASSES
from medzoo.data.readers.tbx11k import TB_CATEGORIES, TBX11K_CLASSES
from tests.data.dataset_fixtures import (
    CHEXPERT_HEADER,
    CHEXPERT_TRAIN,
    NIH_HEADER_2020,
    NIH_ROWS,
    VINDR_ROWS,
    write_image,
    write_lines,
)
from tests.data.label_fixtures import RSNA_CLASSES as CLASS_ROWS
from tests.data.label_fixtures import RSNA_LABELS, TBX11K_TRAIN, tbx11k_json, write_rsna, write_tbx11k

n = np.nan
PNEUMONIA = "00436515-870c-4b36-a041-de91049b9ab4"


def test_rsna_labels_classes_and_boxes(tmp_path):
    m = open_dataset("rsna-pneumonia", write_rsna(tmp_path))
    assert m.label_names == {"findings": ["Lung Opacity", "Pneumonia"], "rsna": RSNA_CLASSES}
    assert [r.id for r in m] == ["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00313ee0-9eaa-42f4-b0ab-c148ed3241cd",
                                 PNEUMONIA, "003d8fa0-6bf1-40ed-b54c-ac657f8495c5"]
    np.testing.assert_array_equal(np.stack([r.labels["findings"] for r in m]), [[0, 0], [0, 0], [1, 1], [0, 0]])
    assert [r.labels["rsna"] for r in m] == [1, 1, 2, 0]
    assert [b["box"] for b in m[2].meta["boxes"]] == [(264.0, 152.0, 213.0, 379.0), (562.0, 152.0, 256.0, 453.0)]
    assert [r.patient_id for r in m] == [r.id for r in m]
    assert m[2].image.endswith(f"stage_2_train_images/{PNEUMONIA}.dcm")


def test_rsna_relabel_encodes_no_finding(tmp_path):
    m = relabel(open_dataset("rsna-pneumonia", write_rsna(tmp_path)), CXR_VOCABULARY)
    pick = [CXR_VOCABULARY.index(v) for v in ("Pneumonia", "Lung Opacity", "No Finding", "Effusion")]
    np.testing.assert_array_equal(np.stack([r.labels["findings"][pick] for r in m]),
                                  [[0, 0, 0, n], [0, 0, 0, n], [1, 1, 0, n], [0, 0, 1, n]])


@pytest.mark.parametrize("labels,classes,where,reason", [
    ([*RSNA_LABELS[:3], RSNA_LABELS[3].replace(",1", ",0")], CLASS_ROWS, ("stage_2_train_labels.csv", 4),
     "a Target = 0 row must have empty"),
    ([*RSNA_LABELS[:4], RSNA_LABELS[4].replace("256.0", "-3")], CLASS_ROWS, ("stage_2_train_labels.csv", 5),
     "bad box"),
    ([*RSNA_LABELS, f"{PNEUMONIA},,,,,0"], CLASS_ROWS, ("stage_2_train_labels.csv", 7),
     "has Target 0 here but 1 on line 4"),
    (RSNA_LABELS, [*CLASS_ROWS[:3], CLASS_ROWS[3].replace("Lung Opacity", "Normal")],
     ("stage_2_detailed_class_info.csv", 4), "class 'Normal' contradicts Target 1"),
    (RSNA_LABELS, [*CLASS_ROWS[:5], CLASS_ROWS[5].replace("Normal", "Healthy")],
     ("stage_2_detailed_class_info.csv", 6), "unknown class 'Healthy'"),
])
def test_rsna_bad_rows_name_file_and_line(tmp_path, labels, classes, where, reason):
    root = write_rsna(tmp_path, labels, classes)
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("rsna-pneumonia", root)
    assert str(info.value).startswith(f"{root / where[0]}:{where[1]}: ")
    assert reason in str(info.value)


def test_tbx11k_labels_per_image(tmp_path):
    m = open_dataset("tbx11k", write_tbx11k(tmp_path), split="train")
    assert m.label_names == {"tb": ["normal", "tb"], "tbx11k": TBX11K_CLASSES, "tb_type": TB_CATEGORIES}
    assert [r.id for r in m] == ["health/h0001.png", "sick/s0001.png", "tb/tb0003.png", "tb/tb0004.png",
                                 "tb/tb1199.png"]
    assert [r.labels["tb"] for r in m] == [0, 0, 1, 1, 1]
    assert [r.labels["tbx11k"] for r in m] == [0, 1, 2, 2, 2]
    np.testing.assert_array_equal(np.stack([r.labels["tb_type"] for r in m]),
                                  [[0, 0, 0], [0, 0, 0], [1, 1, 0], [0, 1, 0], [n, n, n]])
    assert [(b["label"], b["box"]) for b in m[2].meta["boxes"]] == [
        ("ActiveTuberculosis", (233.0, 137.0, 72.0, 101.0)),
        ("ObsoletePulmonaryTuberculosis", (94.0, 110.0, 51.0, 47.0))]


def test_tbx11k_splits_and_unlabelled_test(tmp_path):
    root = write_tbx11k(tmp_path)
    both = open_dataset("tbx11k", root)
    assert [r.meta["official_split"] for r in both] == ["train"] * 5 + ["val"] * 2
    test = open_dataset("tbx11k", root, split="test")
    assert [r.meta["labelled"] for r in test] == [False, False]
    assert np.isnan(test[0].labels["tb"])
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        open_dataset("tbx11k", root, split="dev")


@pytest.mark.parametrize("data,reason", [
    (tbx11k_json([(1, "health/h0001.png")], [(1, 1, [1.0, 2.0, 3.0, 4.0])]), "is in the 'health' folder but has"),
    (tbx11k_json([(1, "tb/tb0003.png")], [(1, 7, [1.0, 2.0, 3.0, 4.0])]), "annotations[0]: expected an image_id"),
    (tbx11k_json([(1, "tb/tb0003.png")], [(1, 1, [1.0, 2.0, 0.0, 4.0])]), "annotations[0]: expected an image_id"),
    (tbx11k_json([([1], "tb/tb0003.png")], []), "images[0]: expected an id and a file_name"),
    (tbx11k_json([(1, "tb/tb9999.png")], []), "image not found"),
    (tbx11k_json([(1, "../../etc/passwd")], []), "escapes the dataset folder"),
])
def test_tbx11k_bad_json_names_file_and_entry(tmp_path, data, reason):
    root = write_tbx11k(tmp_path, train=data)
    (root / "imgs" / "tb" / "tb9999.png").unlink(missing_ok=True)
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("tbx11k", root, split="train")
    assert str(info.value).startswith(str(root / "annotations" / "json" / "TBX11K_train.json"))
    assert reason in str(info.value)


def test_tbx11k_fixture_is_the_real_json_layout():
    assert set(TBX11K_TRAIN) == {"info", "licenses", "categories", "images", "annotations"}
    assert TBX11K_TRAIN["annotations"][0]["bbox"] == [233.0, 137.0, 72.0, 101.0]


# --- RFC 4180 and duplicate headers in the CSV readers ------------------------------------------------------------

def test_quoted_newline_and_comma_in_cohen_metadata(ds):
    root = ds.severity()
    write_lines(root / "metadata.csv", [
        "patientid,offset,sex,age,finding,RT_PCR_positive,survival,intubated,went_icu,needed_supplemental_O2,"
        "extubated,temperature,pO2_saturation,leukocyte_count,neutrophil_count,lymphocyte_count,view,modality,"
        "date,location,folder,filename,doi,url,license,clinical_notes,other_notes,Unnamed: 29",
        '2,0,M,65,Pneumonia/Viral/COVID-19,Y,,,,,,,,,,,PA,X-ray,"January 22, 2020","Cho Ray Hospital, Ho Chi Minh '
        'City, Vietnam",images,01E392EE-69F9-4E33-BFCE-E5C968654078.jpeg,10.1056/NEJMc2001272,'
        'https://www.nejm.org/doi/full/10.1056/NEJMc2001272,,"On January 22, 2020, a 65-year-old man',
        'with a history of hypertension, was admitted.",,'])
    m = open_dataset("covid-severity", root)
    assert m[0].patient_id == "2"
    assert m[1].patient_id == m[1].id


def test_patientid_header_capitalisation(ds):
    root = ds.severity()
    write_lines(root / "metadata.csv", ["Patientid,offset,sex,filename",
                                        "7,0,M,01E392EE-69F9-4E33-BFCE-E5C968654078.jpeg"])
    assert open_dataset("covid-severity", root)[0].patient_id == "7"


def test_quoted_fields_in_nih_and_chexpert(ds):
    rows = [*NIH_ROWS[:2], '00000002_000.png,"No Finding",0,2,81,M,PA,2500,2048,0.171,0.171', *NIH_ROWS[3:]]
    nih = open_dataset("nih-cxr14", ds.nih(rows=rows))
    assert nih[2].meta["no_finding"] == 1.0
    path, sex, rest = CHEXPERT_TRAIN[0].split(",", 2)
    chex = open_dataset("chexpert", ds.chexpert(train=[f'"{path}","{sex}",{rest}']), split="train")
    assert (chex[0].id, chex[0].meta["sex"]) == (path, "Female")


@pytest.mark.parametrize("kind,write,header,column", [
    ("nih-cxr14", "nih", NIH_HEADER_2020.replace("Patient Gender", "Patient Age"), "Patient Age"),
    ("chexpert", "chexpert", CHEXPERT_HEADER.replace("Edema", "Fracture"), "Fracture"),
    ("vindr-cxr", "vindr", VINDR_ROWS[0].replace("rad_id", "class_name"), "class_name"),
])
def test_duplicate_header_names_file_and_column(ds, kind, write, header, column):
    root = getattr(ds, write)()
    listing = {"nih-cxr14": "Data_Entry_2017_v2020.csv", "chexpert": "train.csv", "vindr-cxr": "train.csv"}[kind]
    lines = (root / listing).read_text().splitlines()
    write_lines(root / listing, [header, *lines[1:]])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset(kind, root)
    assert str(info.value).startswith(f"{root / listing}:1: duplicate column {column!r}")


def test_duplicate_header_in_generic_csv(tmp_path):
    write_image(tmp_path / "a.png")
    write_lines(tmp_path / "t.csv", ["path,tb,tb", "a.png,1,0"])
    with pytest.raises(DatasetFormatError, match=r"t.csv:1: duplicate column 'tb' in the header \(columns 2 and 3\)"):
        open_dataset("csv", tmp_path / "t.csv", image_col="path", label_cols="tb", task="tb", type="class")


# --- COVIDx-CT patients -------------------------------------------------------------------------------------------

CT3A = {  # CT-3A style: two COVID-CTset series and two TCIA series of one patient each
    "train_COVIDx_CT-3A.txt": ["137covid_patient9_SR_3_IM00027.png 2 9 53 500 418",
                               "137covid_patient9_SR_4_IM00003.png 2 9 53 500 418",
                               "volume-covid19-A-0028_0-0023.png 2 0 32 512 460",
                               "volume-covid19-A-0028_1-0020.png 2 0 32 512 460",
                               "NCP_341_1834_0022.png 2 0 130 512 429", "NCP_341_1836_0010.png 2 0 130 512 429",
                               "Normal_12_100_0005.png 0 10 20 500 480", "STOIC-7-0012.png 2 5 6 300 310"],
}


def test_covidx_ct_series_of_one_patient_share_the_id_and_a_split(ds):
    root = ds.covidx_ct(files=CT3A)
    for lines in CT3A.values():
        for line in lines:
            write_image(root / "3A_images" / line.split()[0])
    m = open_dataset("covidx-ct", root, level="series", image_dir="3A_images")
    assert [r.patient_id for r in m] == ["COVID-CTset_patient9"] * 2 + ["volume-covid19-A-0028"] * 2 + [
        "NCP_341"] * 2 + ["Normal_12", "STOIC-7"]
    for seed in range(5):
        parts = patient_split(m, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=seed, official=False)
        homes = {p: {name for name, part in parts.items() if p in part.patients()} for p in m.patients()}
        assert all(len(h) == 1 for h in homes.values()), homes
