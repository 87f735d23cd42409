"""Synthetic RSNA Pneumonia Detection data in the Kaggle layout: ``stage_2_train_labels.csv`` (one row per box,
``patientId,x,y,width,height,Target``), ``stage_2_detailed_class_info.csv`` (``patientId,class``, one row per
label row) and ``stage_2_train_images/{patientId}.dcm``. Needs pydicom; skipped without it.

A third of the images are ``Lung Opacity`` (Target 1, one or two opacity boxes in image pixels), a third
``No Lung Opacity / Not Normal`` (another finding is drawn, no box) and a third ``Normal``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medzoo.data._dicom import has_pydicom
from medzoo.data._dicom_write import write_dicom_image
from medzoo.data.synth._common import CorpusSize, family_rng, write_text
from medzoo.data.synth._cxr_draw import draw_findings, to_uint

__all__ = ["write_rsna", "RSNA_LABELS_HEADER", "RSNA_CLASS_HEADER"]

RSNA_LABELS_HEADER = "patientId,x,y,width,height,Target"
RSNA_CLASS_HEADER = "patientId,class"
_CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")


def _patient_id(rng: np.random.Generator) -> str:
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _findings(rng: np.random.Generator, cls: int) -> list[str]:
    if cls == 2:
        return ["Pneumonia", "Consolidation"] if rng.random() < 0.4 else ["Pneumonia"]
    if cls == 1:
        return [("Effusion", "Nodule", "Cardiomegaly", "Atelectasis")[int(rng.integers(4))]]
    return []


def _label_rows(pid: str, cls: int, boxes: dict, px: int) -> list[str]:
    if cls != 2:
        return [f"{pid},,,,,0"]
    rows = []
    for x0, y0, x1, y1 in boxes.values():
        x, y = x0 * px, y0 * px
        rows.append(f"{pid},{x:.1f},{y:.1f},{max(1.0, (x1 - x0) * px):.1f},{max(1.0, (y1 - y0) * px):.1f},1")
    return rows


def write_rsna(root: Path, seed: int, size: CorpusSize) -> Path | None:
    """Write the two CSV files and the DICOM images; returns ``root``, or None when pydicom is not installed."""
    if not has_pydicom():
        return None
    rng = family_rng(seed, "rsna-pneumonia")
    labels, classes = [RSNA_LABELS_HEADER], [RSNA_CLASS_HEADER]
    for i in range(max(6, size.tb // 4)):
        cls, pid = i % 3, _patient_id(rng)
        img, boxes, _, _ = draw_findings(_findings(rng, cls), rng, size.cxr_px, size.cxr_px)
        write_dicom_image(root / "stage_2_train_images" / f"{pid}.dcm", to_uint(img, bits=16), uid_seed=pid)
        rows = _label_rows(pid, cls, boxes, size.cxr_px)
        labels += rows
        classes += [f"{pid},{_CLASSES[cls]}"] * len(rows)
    write_text(root / "stage_2_train_labels.csv", "\n".join(labels) + "\n")
    write_text(root / "stage_2_detailed_class_info.csv", "\n".join(classes) + "\n")
    return root
