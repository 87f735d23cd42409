"""Synthetic VinDr-CXR in the Kaggle challenge form: ``train.csv`` with one row per (image, radiologist, box) and
``train/{image_id}.dicom`` (16-bit; a third stored MONOCHROME1). Needs pydicom; skipped without it.

Each image is read by 3 of the radiologists R1-R17; each reader reports each drawn finding with probability 0.85
and a jittered box (pixel coordinates of the DICOM image); a reader who reports nothing gives a ``No finding``
row (class 14) with empty box fields, as in the real file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medzoo.data._dicom import has_pydicom
from medzoo.data._dicom_write import write_dicom_image
from medzoo.data.synth._common import CorpusSize, family_rng, write_text
from medzoo.data.synth._cxr_draw import draw_findings, to_uint

__all__ = ["write_vindr", "VINDR_HEADER", "VINDR_CLASSES"]

VINDR_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
VINDR_CLASSES = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
                 "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
                 "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "No finding")
# the drawn (NIH-named) finding -> VinDr class id
_FROM_NIH = {"Atelectasis": 1, "Cardiomegaly": 3, "Consolidation": 4, "Infiltration": 6, "Pneumonia": 7,
             "Nodule": 8, "Mass": 8, "Effusion": 10, "Pleural_Thickening": 11, "Pneumothorax": 12, "Fibrosis": 13}


def _reader_rows(rng: np.random.Generator, image_id: str, rad: str, boxes: dict, px: int) -> list[str]:
    rows = []
    for name, (x0, y0, x1, y1) in boxes.items():
        if rng.random() > 0.85:
            continue
        j = rng.uniform(-0.02, 0.02, 4) * px
        xs = np.clip([x0 * px + j[0], x1 * px + j[2]], 0, px)
        ys = np.clip([y0 * px + j[1], y1 * px + j[3]], 0, px)
        cid = _FROM_NIH[name]
        rows.append(f"{image_id},{VINDR_CLASSES[cid]},{cid},{rad},{xs[0]:.1f},{ys[0]:.1f},{xs[1]:.1f},{ys[1]:.1f}")
    return rows or [f"{image_id},No finding,14,{rad},,,,"]


def write_vindr(root: Path, seed: int, size: CorpusSize) -> Path | None:
    """Write ``train.csv`` and ``train/*.dicom``; returns ``root``, or None when pydicom is not installed."""
    if not has_pydicom():
        return None
    rng = family_rng(seed, "vindr")
    names = sorted(_FROM_NIH)
    rows = [VINDR_HEADER]
    n = max(4, size.nih // 5)
    for i in range(n):
        findings = sorted(f for f in names if rng.random() < 0.15)[:3]
        img, boxes, _, _ = draw_findings(findings, rng, size.cxr_px, size.cxr_px)
        image_id = rng.bytes(16).hex()
        write_dicom_image(root / "train" / f"{image_id}.dicom", to_uint(img, bits=16), uid_seed=image_id,
                          monochrome1=i % 3 == 2)
        for rad in sorted(rng.choice(np.arange(1, 18), size=3, replace=False).tolist()):
            rows += _reader_rows(rng, image_id, f"R{rad}", boxes, size.cxr_px)
    write_text(root / "train.csv", "\n".join(rows) + "\n")
    return root
