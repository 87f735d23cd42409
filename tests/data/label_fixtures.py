"""Real-format rows for the label-semantics tests: PadChest (full column layout, quoted report text), RSNA
Pneumonia (Kaggle CSVs) and TBX11K (COCO-style JSON as released)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.data.dataset_fixtures import write_image, write_lines

PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
PADCHEST_COLUMNS = ("ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,"
                    "ViewPosition_DICOM,Projection,MethodProjection,Pediatric,Modality_DICOM,ReportID,Report,"
                    "MethodLabel,Labels,Localizations,LabelsLocalizationsBySentence,labelCUIS,LocalizationsCUIS")


def padchest_line(k: int, terms: list[str] | None, projection: str = "PA", patient: str | None = None) -> str:
    """One CSV line in the release's layout; ``Report`` holds commas and ``Labels`` a quoted list literal."""
    image = f"21684011136696401{k:04d}2009072111404053_00-043-{k:03d}.png"
    pid = patient or f"1926043419672071872221505248462093{k:04d}"
    labels = "" if terms is None else '"' + repr(list(terms)) + '"'
    by_sentence = '"' + repr([list(terms or ["exclude"]), ["loc cardiac"]]) + '"'
    view = {"L": "LATERAL", "PA": "POSTEROANTERIOR"}.get(projection, "ANTEROPOSTERIOR")
    return (f"{image},{k % 3},20090730,{k}1111,{pid},1957.0,M,{view},{projection},Manual review of DICOM fields,"
            f"No,CR,{k}2222,\" sin cambios, cardiomegalia leve.\",Physician,{labels},\"['loc cardiac']\","
            f"{by_sentence},['C0018800'],['C1522601']")


def write_padchest(tmp: Path, rows: list[str]) -> Path:
    """Write the CSV and a tiny PNG per row under ``tmp/padchest_full``; returns the root."""
    root = tmp / "padchest_full"
    write_lines(root / PADCHEST_CSV, [PADCHEST_COLUMNS, *rows])
    for row in rows:
        name, folder = row.split(",")[:2]
        write_image(root / folder / name)
    return root


RSNA_LABELS = [
    "patientId,x,y,width,height,Target",
    "0004cfab-14fd-4e49-80ba-63a80b6bddd6,,,,,0",
    "00313ee0-9eaa-42f4-b0ab-c148ed3241cd,,,,,0",
    "00436515-870c-4b36-a041-de91049b9ab4,264.0,152.0,213.0,379.0,1",
    "00436515-870c-4b36-a041-de91049b9ab4,562.0,152.0,256.0,453.0,1",
    "003d8fa0-6bf1-40ed-b54c-ac657f8495c5,,,,,0",
]
RSNA_CLASSES = [
    "patientId,class",
    "0004cfab-14fd-4e49-80ba-63a80b6bddd6,No Lung Opacity / Not Normal",
    "00313ee0-9eaa-42f4-b0ab-c148ed3241cd,No Lung Opacity / Not Normal",
    "00436515-870c-4b36-a041-de91049b9ab4,Lung Opacity",
    "00436515-870c-4b36-a041-de91049b9ab4,Lung Opacity",
    "003d8fa0-6bf1-40ed-b54c-ac657f8495c5,Normal",
]


def write_rsna(tmp: Path, labels: list[str] = RSNA_LABELS, classes: list[str] = RSNA_CLASSES) -> Path:
    root = tmp / "rsna"
    write_lines(root / "stage_2_train_labels.csv", labels)
    write_lines(root / "stage_2_detailed_class_info.csv", classes)
    for pid in sorted({r.split(",")[0] for r in RSNA_LABELS[1:]}):
        write_image(root / "stage_2_train_images" / f"{pid}.dcm")
    return root


def tbx11k_json(images: list[tuple[int, str]], annotations: list[tuple[int, int, list[float]]]) -> dict:
    """A COCO-style TBX11K file: ``images`` as (id, file_name), ``annotations`` as (image_id, category_id, bbox)."""
    return {
        "info": [{"description": "TBX11K Dataset", "version": "1.0", "year": 2020}],
        "licenses": [{"id": 1, "name": "Attribution-NonCommercial-ShareAlike License"}],
        "categories": [{"id": 1, "name": "ActiveTuberculosis", "supercategory": "Tuberculosis"},
                       {"id": 2, "name": "ObsoletePulmonaryTuberculosis", "supercategory": "Tuberculosis"},
                       {"id": 3, "name": "PulmonaryTuberculosis", "supercategory": "Tuberculosis"}],
        "images": [{"id": i, "file_name": f, "width": 512, "height": 512, "date_captured": "2020-06-22 00:00:00",
                    "license": 1, "coco_url": "", "flickr_url": ""} for i, f in images],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "iscrowd": 0, "area": b[2] * b[3],
                         "bbox": b, "width": 512, "height": 512} for k, (i, c, b) in enumerate(annotations)],
    }


TBX11K_TRAIN = tbx11k_json(
    [(1, "health/h0001.png"), (2, "sick/s0001.png"), (3, "tb/tb0003.png"), (4, "tb/tb0004.png"),
     (5, "tb/tb1199.png")],
    [(3, 1, [233.0, 137.0, 72.0, 101.0]), (3, 2, [94.0, 110.0, 51.0, 47.0]), (4, 2, [301.5, 98.0, 60.0, 41.0])],
)
TBX11K_VAL = tbx11k_json([(1, "health/h0500.png"), (2, "tb/tb0900.png")], [(2, 1, [120.0, 80.0, 90.0, 110.0])])
TBX11K_TEST = tbx11k_json([(1, "test/0001.png"), (2, "test/0002.png")], [])


def write_tbx11k(tmp: Path, train: dict = TBX11K_TRAIN) -> Path:
    root = tmp / "TBX11K"
    for name, data in (("TBX11K_train.json", train), ("TBX11K_val.json", TBX11K_VAL), ("all_test.json", TBX11K_TEST)):
        write_lines(root / "annotations" / "json" / name, [json.dumps(data)])
        for img in data["images"]:
            write_image(root / "imgs" / img["file_name"])
    return root
