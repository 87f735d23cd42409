"""Synthetic TBX11K in its release layout: ``imgs/{health,sick,tb,test}/*.png`` and COCO-style
``annotations/json/{TBX11K_train,TBX11K_val,all_test}.json``.

``health`` images are clear, ``sick`` ones carry a non-TB finding, ``tb`` ones carry upper-zone TB lesions with
``ActiveTuberculosis`` or ``ObsoletePulmonaryTuberculosis`` boxes (``bbox = [x, y, w, h]`` in image pixels, category
ids 1-3 as released); the last ``tb`` image has no box, as one real TB image has none. ``all_test.json`` lists
the test images without annotations (the real test labels are withheld).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medzoo.data.imageio import write_png
from medzoo.data.synth._common import CorpusSize, family_rng, write_text
from medzoo.data.synth._cxr_draw import draw_findings, render_chest, sample_chest, tb_lesion, to_uint

__all__ = ["write_tbx11k", "TBX11K_CATEGORIES"]

TBX11K_CATEGORIES = [
    {"id": 1, "name": "ActiveTuberculosis", "supercategory": "Tuberculosis"},
    {"id": 2, "name": "ObsoletePulmonaryTuberculosis", "supercategory": "Tuberculosis"},
    {"id": 3, "name": "PulmonaryTuberculosis", "supercategory": "Tuberculosis"},
]
_PREFIX = {"health": "h", "sick": "s", "tb": "tb", "test": "test"}


def _image(rng: np.random.Generator, folder: str, px: int, boxed: bool) -> tuple[np.ndarray, list[tuple]]:
    """The image and its ``(category_id, [x, y, w, h])`` boxes."""
    if folder == "sick":
        img, _, _, _ = draw_findings([("Pneumonia", "Effusion", "Nodule")[int(rng.integers(3))]], rng, px, px)
        return img, []
    chest = sample_chest(rng, px, px)
    img, _, _ = render_chest(chest, rng)
    boxes = []
    if folder == "tb" or (folder == "test" and rng.random() < 0.3):
        for side in ["right", "left"] if rng.random() < 0.3 else ["right"]:
            x0, y0, x1, y1 = tb_lesion(img, chest, rng, side)
            boxes.append((1 if rng.random() < 0.75 else 2, [round(x0 * px, 1), round(y0 * px, 1),
                                                            round(max(1, (x1 - x0) * px), 1),
                                                            round(max(1, (y1 - y0) * px), 1)]))
    return np.clip(img, 0, 1), boxes if boxed else []


def _coco(entries: list[tuple[str, list[tuple]]], px: int, with_boxes: bool) -> dict:
    images, annotations = [], []
    for k, (name, boxes) in enumerate(entries, start=1):
        images.append({"id": k, "file_name": name, "width": px, "height": px, "license": 1})
        for cat, box in boxes if with_boxes else []:
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": cat, "iscrowd": 0,
                                "area": round(box[2] * box[3], 2), "bbox": box})
    return {"info": {"description": "synthetic TBX11K-format data", "version": "1.0"}, "licenses": [],
            "categories": TBX11K_CATEGORIES, "images": images, "annotations": annotations}


def write_tbx11k(root: Path, seed: int, size: CorpusSize) -> Path:
    """Write images and the three JSON files under ``root``; returns ``root``."""
    rng = family_rng(seed, "tbx11k")
    n = max(3, size.tb // 6)
    plan = {"train": [("health", n), ("sick", n), ("tb", n)], "val": [("health", 1), ("sick", 1), ("tb", 2)],
            "test": [("test", 3)]}
    counters = dict.fromkeys(_PREFIX, 0)
    for split, groups in plan.items():
        entries = []
        for folder, count in groups:
            for j in range(count):
                counters[folder] += 1
                name = f"{folder}/{_PREFIX[folder]}{counters[folder]:04d}.png"
                boxed = not (split == "val" and folder == "tb" and j == count - 1)
                img, boxes = _image(rng, folder, size.cxr_px, boxed)
                write_png(root / "imgs" / name, to_uint(img))
                entries.append((name, boxes))
        fname = "all_test.json" if split == "test" else f"TBX11K_{split}.json"
        data = _coco(entries, size.cxr_px, with_boxes=split != "test")
        write_text(root / "annotations" / "json" / fname, json.dumps(data) + "\n")
    return root
