"""Writers of tiny datasets in their real on-disk formats (the public releases' file names, headers and rows).

A :class:`DatasetWriter` (the ``ds`` fixture of conftest.py) is bound to a folder; each method writes one
dataset and returns its root. Images are real (4x4) PNG / NIfTI files; the readers only check that they exist.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np

NIH_HEADER_2020 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                   "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_ROWS = [
    "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.14300000000000002,0.14300000000000002",
    "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171",
    "00000003_000.png,Hernia|Pleural_Thickening,0,3,74,F,AP,2500,2048,0.168,0.168",
    "00000004_000.png,Effusion|Infiltration|Mass,0,4,82,M,AP,2048,2500,0.168,0.168",
]
NIH_BOXES = [
    "Image Index,Finding Label,Bbox [x,y,w,h],,,",
    "00000004_000.png,Infiltrate,225.08,547.02,86.78,79.19",
    "00000004_000.png,Mass,100,200,50.5,60",
    "00000001_000.png,Cardiomegaly,300.0,400.0,500.0,300.0,,,",
]

CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")
CHEXPERT_TRAIN = [
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,"
    "-1.0,,-1.0,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study2/view2_lateral.jpg,Female,87,Lateral,,,,,1.0,,,,,,,,,1.0,",
]
CHEXPERT_VALID = [
    "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0,"
    "0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
]

MIMIC_LABEL_HEADER = ("subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
                      "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
                      "Pneumothorax,Support Devices")
MIMIC_LABELS = [
    "10000032,50414267,,,,,,,,,1.0,,,,,",
    "10000032,53189527,,1.0,,-1.0,,,,,,1.0,,,,",
]
MIMIC_META_HEADER = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
                     "StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
                     "PatientOrientationCodeSequence_CodeMeaning")
MIMIC_META = [
    "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,"
    "213014.531,CHEST (PA AND LAT),postero-anterior,Erect",
    "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544,21800506,"
    "213014.531,CHEST (PA AND LAT),lateral,Erect",
    "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,10000032,53189527,CHEST (PORTABLE AP),AP,2705,2539,21800626,"
    "165500.312,CHEST (PORTABLE AP),antero-posterior,Erect",
    "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714,10000764,57375967,CHEST (PA AND LAT),PA,3056,2544,21321010,"
    "20005.000,CHEST (PA AND LAT),postero-anterior,Erect",
]
MIMIC_SPLIT = [
    "dicom_id,study_id,subject_id,split",
    "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,50414267,10000032,train",
    "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,50414267,10000032,train",
    "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,53189527,10000032,train",
    "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714,57375967,10000764,test",
]

PADCHEST_HEADER = ("ImageID,ImageDir,StudyDate_DICOM,PatientID,PatientBirth,PatientSex_DICOM,Projection,"
                   "MethodLabel,Labels")
PADCHEST_ROWS = [
    "img_a.png,0,20090101,pat1,1950,M,PA,Physician,['normal']",
    "img_b.png,0,20100101,pat1,1950,M,L,Physician,\"['pleural effusion', ' cardiomegaly']\"",
    "img_c.png,1,20120101,pat2,1960,F,AP,RNN_model,\"['cardiomegaly', '']\"",
    "img_d.png,1,20120101,pat3,1960,F,PA,RNN_model,",
]

VINDR_ROWS = [
    "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max",
    "50a418190bc3fb1ef1633bf9678929b3,No finding,14,R11,,,,",
    "50a418190bc3fb1ef1633bf9678929b3,No finding,14,R7,,,,",
    "50a418190bc3fb1ef1633bf9678929b3,No finding,14,R10,,,,",
    "9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R10,691.0,1375.0,1653.0,1831.0",
    "9a5094b2563a1ef3ff50dc5c7ff71345,Aortic enlargement,0,R10,1264.0,743.0,1611.0,1019.0",
    "9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R9,700,1400,1650,1800",
    "9a5094b2563a1ef3ff50dc5c7ff71345,No finding,14,R8,,,,",
]

COVIDX_TRAIN = [
    "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png COVID-19 ricord",
    "COVID 1 COVID(1).png COVID-19 sirm",
    "8a6b1a3f-1c8e-4b17-9d32-9b5e5f5b5d61 8a6b1a3f.png normal rsna",
    "p17 pneumo17.png pneumonia",
]
COVIDX_TEST = [
    "p90 t1.png normal",
    "p91 t2.png COVID-19 cohen",
]

COVIDX_CT = {
    "train_COVIDx_CT-2A.txt": [
        "NCP_341_1834_0022.png 2 0 130 512 429",
        "Normal_12_100_0005.png 0 10 20 500 480",
        "NCP_341_1834_0021.png 2 1 131 511 430",
        "STOIC-7-0012.png 2 5 6 300 310",
    ],
    "val_COVIDx_CT-2A.txt": ["CP_5_200_0001.png 1 3 4 100 120"],
    "test_COVIDx_CT-2A.txt": ["COVIDCTMD-P041-IM0041.png 2 0 0 512 512", "COVIDCTMD-P041-IM0040.png 1 0 0 510 500"],
}

COHEN_SEVERITY = [
    "## Severity scores for COVID-19 images (Cohen et al. 2020)",
    "## geographic_mean: 0-8, opacity_mean: 0-6",
    "## mean of 3 raters",
    "## https://github.com/ieee8023/covid-chestxray-dataset",
    "## ",
    "filename,geographic_mean,opacity_mean",
    "01E392EE-69F9-4E33-BFCE-E5C968654078.jpeg,6.0,4.0",
    "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg,2.3333333333333335,1.6666666666666667",
]
COVIDNET_S_SEVERITY = [
    "filename,Geographic,Opacity,Sum,Product,patientid,dataset,age,sex,view,location,finding",
    "cohen1.jpeg,4,7,11,28,19,cohen,50,M,PA,Italy,COVID-19",
    "actmed1.png,,,,,A1,actmed,,F,AP,,COVID-19",
]


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


def write_lines(path: Path, lines: list[str], *, trailing_newline: bool = True) -> Path:
    """Write text lines (UTF-8); ``.gz`` paths are gzipped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + ("\n" if trailing_newline else "")).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_image(path: Path) -> Path:
    """A tiny real PNG (the bytes are PNG whatever the suffix; readers never decode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG)
    return path


def write_nifti(path: Path) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4)), str(path))
    return path


class DatasetWriter:
    """Writes each public dataset layout under ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def nih(self, *, variant: str = "v2020", rows: list[str] | None = None, kaggle_layout: bool = False,
            boxes: list[str] | None = NIH_BOXES, lists: bool = True) -> Path:
        root = self.tmp / "nih"
        rows = list(NIH_ROWS if rows is None else rows)
        if variant == "v2020":
            write_lines(root / "Data_Entry_2017_v2020.csv", [NIH_HEADER_2020, *rows])
        else:  # original 2017: trailing comma on every line, 'Patient Sex' as in the Box copy
            header = NIH_HEADER_2020.replace("Patient Gender", "Patient Sex") + ","
            write_lines(root / "Data_Entry_2017.csv", [header, *(r + "," for r in rows)])
        folder = root / "images_001" / "images" if kaggle_layout else root / "images"
        for row in NIH_ROWS:
            write_image(folder / row.split(",")[0])
        if boxes is not None:
            write_lines(root / "BBox_List_2017.csv", boxes)
        if lists:
            write_lines(root / "train_val_list.txt", ["00000001_000.png", "00000001_001.png", "00000002_000.png",
                                                      "00000004_000.png"])
            write_lines(root / "test_list.txt", ["00000003_000.png"])
        return root

    def chexpert(self, *, folder: str = "CheXpert-v1.0-small", train: list[str] | None = None) -> Path:
        root = self.tmp / folder
        train = CHEXPERT_TRAIN if train is None else train
        write_lines(root / "train.csv", [CHEXPERT_HEADER, *train])
        write_lines(root / "valid.csv", [CHEXPERT_HEADER, *CHEXPERT_VALID])
        for row in CHEXPERT_TRAIN + CHEXPERT_VALID:
            write_image(root / row.split(",")[0].split("/", 1)[1])
        return root

    def mimic(self, *, meta: list[str] | None = None) -> Path:
        root = self.tmp / "mimic"
        write_lines(root / "mimic-cxr-2.0.0-chexpert.csv.gz", [MIMIC_LABEL_HEADER, *MIMIC_LABELS])
        write_lines(root / "mimic-cxr-2.0.0-metadata.csv", [MIMIC_META_HEADER, *(meta or MIMIC_META)])
        write_lines(root / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT)
        for row in MIMIC_META:
            dicom, subject, study = row.split(",")[:3]
            write_image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
        return root

    def padchest(self, *, rows: list[str] | None = None) -> Path:
        root = self.tmp / "padchest"
        write_lines(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
                    [PADCHEST_HEADER, *(PADCHEST_ROWS if rows is None else rows)])
        for row in PADCHEST_ROWS:
            name, folder = row.split(",")[:2]
            write_image(root / folder / name)
        return root

    def vindr(self, *, rows: list[str] | None = None) -> Path:
        root = self.tmp / "vindr"
        write_lines(root / "train.csv", VINDR_ROWS if rows is None else rows)
        write_image(root / "train" / "50a418190bc3fb1ef1633bf9678929b3.dicom")
        write_image(root / "train" / "9a5094b2563a1ef3ff50dc5c7ff71345.png")
        return root

    def montgomery(self, *, masks: bool = True) -> Path:
        root = self.tmp / "tb"
        set_dir = root / "MontgomerySet"
        for name in ("MCUCXR_0001_0.png", "MCUCXR_0002_1.png", "MCUCXR_0104_1.png"):
            write_image(set_dir / "CXR_png" / name)
            write_lines(set_dir / "ClinicalReadings" / name.replace(".png", ".txt"), ["Patient's Sex: M"])
            if masks:
                write_image(set_dir / "ManualMask" / "leftMask" / name)
                write_image(set_dir / "ManualMask" / "rightMask" / name)
        (set_dir / "CXR_png" / "Thumbs.db").write_bytes(b"\0")
        (set_dir / "CXR_png" / "._MCUCXR_0001_0.png").write_bytes(b"\0")
        return root

    def shenzhen(self) -> Path:
        set_dir = self.tmp / "ChinaSet_AllFiles"
        for name in ("CHNCXR_0001_0.png", "CHNCXR_0002_1.png"):
            write_image(set_dir / "CXR_png" / name)
        write_image(set_dir / "mask" / "CHNCXR_0002_1_mask.png")
        return set_dir

    def covidx_cxr(self, *, train: list[str] | None = None) -> Path:
        root = self.tmp / "covidx"
        write_lines(root / "train_COVIDx9A.txt", COVIDX_TRAIN if train is None else train)
        write_lines(root / "test_COVIDx9A.txt", COVIDX_TEST)
        for line in COVIDX_TRAIN:
            name = line.split()[-2] if line.split()[-1] in ("normal", "pneumonia", "COVID-19") else line.split()[-3]
            write_image(root / "train" / name)
        for name in ("t1.png", "t2.png"):
            write_image(root / "test" / name)
        return root

    def covidx_ct(self, *, files: dict[str, list[str]] | None = None) -> Path:
        root = self.tmp / "covidx-ct"
        for fname, lines in (files or COVIDX_CT).items():
            write_lines(root / fname, lines)
        for lines in COVIDX_CT.values():
            for line in lines:
                write_image(root / "2A_images" / line.split()[0])
        return root

    def severity(self, *, scale: str = "cohen", rows: list[str] | None = None) -> Path:
        root = self.tmp / f"severity-{scale}"
        if scale == "cohen":
            write_lines(root / "annotations" / "covid-severity-scores.csv", rows or COHEN_SEVERITY)
            write_lines(root / "metadata.csv", ["patientid,offset,sex,filename",
                                                "2,0,M,01E392EE-69F9-4E33-BFCE-E5C968654078.jpeg"])
            names = [r.split(",")[0] for r in COHEN_SEVERITY[6:]]
        else:
            write_lines(root / "severity_annotations.csv", rows or COVIDNET_S_SEVERITY)
            names = [r.split(",")[0] for r in COVIDNET_S_SEVERITY[1:]]
        for name in names:
            write_image(root / "images" / name)
        return root

    def msd(self, *, data: dict | None = None) -> Path:
        root = self.tmp / "Task06_Lung"
        data = data or {
            "name": "Lung", "description": "Lung and cancer segmentation", "tensorImageSize": "3D",
            "modality": {"0": "CT"}, "labels": {"0": "background", "1": "cancer"}, "numTraining": 2, "numTest": 1,
            "training": [{"image": "./imagesTr/lung_001.nii.gz", "label": "./labelsTr/lung_001.nii.gz"},
                         {"image": "./imagesTr/lung_003.nii.gz", "label": "./labelsTr/lung_003.nii.gz"}],
            "test": ["./imagesTs/lung_002.nii.gz"],
        }
        write_lines(root / "dataset.json", json.dumps(data, indent=4).splitlines())
        for sub, name in (("imagesTr", "lung_001"), ("labelsTr", "lung_001"), ("imagesTr", "lung_003"),
                          ("labelsTr", "lung_003"), ("imagesTs", "lung_002")):
            write_nifti(root / sub / f"{name}.nii.gz")
        (root / "imagesTr" / "._lung_001.nii.gz").write_bytes(b"\0")
        return root

    def medicalnet(self, *, lines: list[str] | None = None) -> Path:
        data = self.tmp / "data"
        for sub in ("images", "labels"):
            for name in ("070", "071"):
                write_nifti(data / "MRBrainS18" / sub / f"{name}.nii.gz")
        return write_lines(data / "train.txt", lines or ["MRBrainS18/images/070.nii.gz MRBrainS18/labels/070.nii.gz",
                                                         "MRBrainS18/images/071.nii.gz MRBrainS18/labels/071.nii.gz"])

    def nifti_folder(self, *, label_names: tuple[str, ...] = ("a", "b")) -> Path:
        root = self.tmp / "nifti"
        for name in ("a", "b"):
            write_nifti(root / "images" / f"{name}.nii.gz")
        for name in label_names:
            write_nifti(root / "labels" / f"{name}.nii.gz")
        (root / "images" / "._a.nii.gz").write_bytes(b"\0")
        return root
