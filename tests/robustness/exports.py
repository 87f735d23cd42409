"""Tiny export folders (resnet10, widths 8/16/32/64) for attacks through ``medzoo predict``."""

from __future__ import annotations

from pathlib import Path

from medzoo.config import to_dict
from medzoo.zoo.export import write_export_dir
from tests.helpers import build_model as build

W = [8, 16, 32, 64]
CT_PRE = {"modality": ["CT"], "normalisation": "window", "intensity_window": [-100, 100], "spacing": [1.0, 1.0, 1.0],
          "input_size": [16, 16, 16]}
CXR_PRE = {"modality": ["CXR"], "normalisation": "none", "input_size": [32, 32]}
CT_TASKS = {"seg": {"type": "segmentation", "level": "volume", "num_classes": 2}}
CXR_TASKS = {"findings": {"type": "multilabel", "level": "image", "labels": ["a", "b"]}}


def tiny_export(folder: Path, kind: str, seed: int = 0) -> Path:
    """``folder/<kind>``: a CT segmentation model at 1 mm spacing (``"ct"``) or a CXR multilabel one (``"cxr"``),
    its weights drawn with ``seed``."""
    tasks, pre = (CT_TASKS, CT_PRE) if kind == "ct" else (CXR_TASKS, CXR_PRE)
    model = build(tasks, seed=seed)
    spec = {t: {"type": c["type"], "level": c["level"], "labels": list(model.heads[t].label_names)}
            for t, c in tasks.items()}
    for t, c in tasks.items():
        if c["type"] == "multilabel":
            spec[t]["thresholds"] = dict(zip(c["labels"], model.heads[t].thresholds.tolist()))
    meta = {"name": kind, "version": "1", "parts": ["encoder", "heads"], "preprocessing": pre,
            "architecture": {"encoder": "resnet10", "widths": W}, "tasks": spec, "license": "MIT",
            "source": "https://example.org/tests", "citation": "none"}
    return write_export_dir(folder / kind, state_dict=model.state_dict(), config=to_dict(model.config), metadata=meta)
