"""Helpers of the training tests: tiny run configs over the tiny synthetic corpus."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

WIDTHS = [8, 16, 32, 64]
CXR14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
         "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]

TASKS = {
    "findings": {"type": "multilabel", "level": "image", "labels": CXR14},
    "tb": {"type": "classification", "level": "image", "labels": ["normal", "tb"]},
    "covid_ct": {"type": "classification", "level": "series", "labels": ["normal", "pneumonia", "covid19"]},
    "ct_seg": {"type": "segmentation", "level": "volume", "labels": ["background", "lung", "lesion"],
               "decoder_channels": [16, 16, 8, 8, 8]},
}

DATA = {
    "nih": {"name": "nih", "kind": "nih-cxr14", "root": "nih", "tasks": {"findings": "findings"},
            "transform": {"preset": "cxr", "size": [32]}, "batch_size": 4},
    "shenzhen": {"name": "shenzhen", "kind": "shenzhen", "root": "shenzhen/ChinaSet_AllFiles", "tasks": {"tb": "tb"},
                 "transform": {"preset": "cxr", "size": [32]}, "batch_size": 2},
    "covidx_ct": {"name": "covidx_ct", "kind": "covidx-ct", "root": "covidx-ct", "options": {"level": "series"},
                  "tasks": {"covid": "covid_ct"}, "slice_size": [32, 32], "transform": {"preset": "series"},
                  "batch_size": 2},
    "msd": {"name": "msd", "kind": "msd", "root": "ct/Task99_SynthLung", "options": {"split": "training"},
            "tasks": {"segmentation": "ct_seg"}, "split": {"official": False, "fractions": {"train": 0.5, "val": 0.5}},
            "transform": {"preset": "ct", "size": [16, 16, 16], "augment": False, "options": {"spacing": None}},
            "batch_size": 2},
}
NEEDS = {"nih": ["findings"], "shenzhen": ["tb"], "covidx_ct": ["covid_ct"], "msd": ["ct_seg"]}


def run_config(corpus: Path, out: Path, datasets: list[str], **train: Any) -> dict[str, Any]:
    """A run-config mapping over ``datasets`` (keys of DATA) with tiny widths; ``train`` entries override."""
    tasks = {t: copy.deepcopy(TASKS[t]) for d in datasets for t in NEEDS[d]}
    model: dict[str, Any] = {"encoder": {"name": "resnet10", "widths": WIDTHS}, "tasks": tasks}
    if "covid_ct" in tasks:
        model["aggregator"] = {"name": "attention", "options": {"hidden_features": 16}}
    base = {"epochs": 1, "max_steps": 2, "optimizer": "adamw", "lr": 1e-3, "seed": 0, "device": "cpu",
            "sampling": "round_robin"}
    base.update(train)
    return {"data_root": str(corpus), "model": model, "data": [copy.deepcopy(DATA[d]) for d in datasets],
            "train": base, "output": {"dir": str(out), "tensorboard": False}}


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    """Write a run config mapping as YAML."""
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path
