"""Synthetic chest X-ray sets in the NIH ChestX-ray14, CheXpert and COVIDx-CXR on-disk formats.

Findings are drawn into each image at known places (see ``_cxr_draw``), so labels are learnable and the NIH
boxes (``BBox_List_2017.csv``, 1024-px coordinates, ``Infiltrate`` spelling) are where the finding is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medzoo.data.imageio import write_png
from medzoo.data.synth._common import CorpusSize, family_rng, split_patients, write_text
from medzoo.data.synth._cxr_draw import FINDINGS, draw_findings, ground_glass, render_chest, sample_chest, to_uint

__all__ = ["write_nih", "write_chexpert", "write_covidx_cxr", "NIH_HEADER", "BBOX_HEADER", "CHEXPERT_COLUMNS"]

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
BBOX_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax")
CHEXPERT_COLUMNS = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                    "Pleural Effusion,Pleural Other,Fracture,Support Devices").split(",")
# CheXpert label -> the NIH findings drawn for it
_CHEXPERT_FROM_NIH = {
    "Enlarged Cardiomediastinum": ("Cardiomegaly",), "Cardiomegaly": ("Cardiomegaly",),
    "Lung Opacity": ("Infiltration", "Consolidation", "Pneumonia", "Edema", "Atelectasis"),
    "Lung Lesion": ("Nodule", "Mass"), "Edema": ("Edema",), "Consolidation": ("Consolidation",),
    "Pneumonia": ("Pneumonia",), "Atelectasis": ("Atelectasis",), "Pneumothorax": ("Pneumothorax",),
    "Pleural Effusion": ("Effusion",), "Pleural Other": ("Pleural_Thickening",),
}


def _sample_findings(rng: np.random.Generator, names: list[str], p: float = 0.1, most: int = 3) -> list[str]:
    chosen = [n for n in names if rng.random() < p]
    if len(chosen) > most:
        chosen = sorted(rng.choice(chosen, size=most, replace=False).tolist())
    return sorted(chosen)


def _fmt(v: float) -> str:
    return f"{v:.10g}"


def write_nih(root: Path, seed: int, size: CorpusSize) -> Path:
    """Write ``images/``, ``Data_Entry_2017_v2020.csv``, the split lists and ``BBox_List_2017.csv``."""
    rng = family_rng(seed, "nih")
    names = list(FINDINGS)
    rows, boxes, patients = [NIH_HEADER], [BBOX_HEADER], {}
    pid, n = 0, 0
    while n < size.nih:
        pid += 1
        for fu in range(min(int(rng.integers(1, 4)), size.nih - n)):
            name = f"{pid:08d}_{fu:03d}.png"
            findings = _sample_findings(rng, names)
            img, drawn, _, _ = draw_findings(findings, rng, size.cxr_px, size.cxr_px)
            write_png(root / "images" / name, to_uint(img))
            w, h = int(rng.integers(2000, 3000)), int(rng.integers(2000, 3000))
            spacing = _fmt(float(rng.choice([0.143, 0.139, 0.168])))
            view = "PA" if rng.random() < 0.6 else "AP"
            label = "|".join(findings) if findings else "No Finding"
            rows.append(f"{name},{label},{fu},{pid},{int(rng.integers(18, 90))},{'MF'[int(rng.integers(2))]},"
                        f"{view},{w},{h},{spacing},{spacing}")
            for f in findings:
                if f in BBOX_CLASSES and rng.random() < 0.6:
                    x0, y0, x1, y1 = (v * 1024.0 for v in drawn[f])
                    spelled = "Infiltrate" if f == "Infiltration" else f
                    boxes.append(f"{name},{spelled},{_fmt(x0)},{_fmt(y0)},{_fmt(x1 - x0)},{_fmt(y1 - y0)}")
            patients.setdefault(pid, []).append(name)
            n += 1
    write_text(root / "Data_Entry_2017_v2020.csv", "\n".join(rows) + "\n")
    write_text(root / "BBox_List_2017.csv", "\n".join(boxes) + "\n")
    train_val, test = split_patients(rng, sorted(patients), (0.75, 0.25))
    for fname, group in (("train_val_list.txt", train_val), ("test_list.txt", test)):
        lines = sorted(img for p in group for img in patients[p])
        write_text(root / fname, "\n".join(lines) + "\n")
    return root


def _chexpert_value(rng: np.random.Generator, present: bool, valid: bool) -> str:
    if present:
        return "1.0" if valid or rng.random() < 0.85 else "-1.0"
    if valid:
        return "0.0"
    return "0.0" if rng.random() < 0.3 else ""


def _chexpert_row(rng, rel: str, findings: list[str], view: str, valid: bool) -> str:
    sex, age = ("Male", "Female")[int(rng.integers(2))], int(rng.integers(18, 90))
    lateral = view == "lateral"
    appa = "" if lateral else ("AP" if rng.random() < 0.7 else "PA")
    values = []
    for col in CHEXPERT_COLUMNS[5:]:
        if col == "No Finding":
            values.append("1.0" if not findings else ("0.0" if valid else ""))
        elif col in _CHEXPERT_FROM_NIH:
            values.append(_chexpert_value(rng, any(f in findings for f in _CHEXPERT_FROM_NIH[col]), valid))
        else:  # Fracture, Support Devices: never drawn
            values.append("0.0" if valid else "")
    return ",".join([rel, sex, str(age), "Lateral" if lateral else "Frontal", appa, *values])


def _save_jpeg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint(img)).save(path, format="JPEG", quality=92)


def write_chexpert(root: Path, seed: int, size: CorpusSize) -> Path:
    """Write ``CheXpert-v1.0-small/{train,valid}.csv`` and JPEGs under ``{train,valid}/patientNNNNN/studyN/``.

    Returns the ``CheXpert-v1.0-small`` folder (paths in the CSVs start with that folder's name).
    """
    rng = family_rng(seed, "chexpert")
    base = root / "CheXpert-v1.0-small"
    names = [f for f in FINDINGS if any(f in v for v in _CHEXPERT_FROM_NIH.values())]
    for split, n_studies, first_pid in (("train", size.chexpert, 1), ("valid", max(2, size.chexpert // 4), 64541)):
        rows, pid = [",".join(CHEXPERT_COLUMNS)], first_pid
        for s in range(n_studies):
            findings = _sample_findings(rng, names, p=0.15)
            img, _, _, _ = draw_findings(findings, rng, size.cxr_px, size.cxr_px)
            study = f"{split}/patient{pid:05d}/study{1 + s % 2}"
            _save_jpeg(base / study / "view1_frontal.jpg", img)
            rows.append(_chexpert_row(rng, f"CheXpert-v1.0-small/{study}/view1_frontal.jpg", findings, "frontal",
                                      split == "valid"))
            if rng.random() < 0.2:  # a lateral view of the same study
                side, _, _ = render_chest(sample_chest(rng, size.cxr_px, size.cxr_px), rng)
                _save_jpeg(base / study / "view2_lateral.jpg", side[:, ::-1] * 0.8)
                rows.append(_chexpert_row(rng, f"CheXpert-v1.0-small/{study}/view2_lateral.jpg", findings,
                                          "lateral", split == "valid"))
            pid += s % 2
        write_text(base / f"{split}.csv", "\n".join(rows) + "\n")
    return base


def write_covidx_cxr(root: Path, seed: int, size: CorpusSize) -> Path:
    """Write COVIDx-CXR ``train/``, ``test/`` and ``{train,test}_COVIDx9A.txt`` (4-field lines, 3 classes).

    normal: clear lungs; pneumonia: unilateral lobar consolidation; COVID-19: bilateral lower ground glass.
    Some patient ids contain a space, as in the real files.
    """
    rng = family_rng(seed, "covidx-cxr")
    classes = ["normal", "pneumonia", "COVID-19"]
    items = []
    for i in range(size.covidx_cxr):
        cls = classes[i % 3]
        src = {"normal": "rsna", "pneumonia": "rsna", "COVID-19": ("sirm", "ricord", "bimcv")[i % 3]}[cls]
        pid = f"COVID {i}" if src == "sirm" else f"{src}-{i:05d}"
        fname = f"COVID({i}).png" if src == "sirm" else f"{src}-{i:05d}-0.png"
        items.append((pid, fname, cls, src))
    train, test = split_patients(rng, list(range(len(items))), (0.75, 0.25))
    for split, idx in (("train", sorted(train)), ("test", sorted(test))):
        lines = []
        for k in idx:
            pid, fname, cls, src = items[k]
            chest = sample_chest(rng, size.cxr_px, size.cxr_px)
            img, _, _ = render_chest(chest, rng)
            if cls == "pneumonia":
                FINDINGS["Pneumonia"](img, chest, rng, "right" if rng.random() < 0.5 else "left")
            elif cls == "COVID-19":
                for side in ("right", "left"):
                    ground_glass(img, chest, rng, side, int(rng.integers(2, 5)), int(rng.integers(2, 4)))
            write_png(root / split / fname, to_uint(np.clip(img, 0, 1)))
            lines.append(f"{pid} {fname} {cls} {src}")
        write_text(root / f"{split}_COVIDx9A.txt", "\n".join(lines) + "\n")
    return root
