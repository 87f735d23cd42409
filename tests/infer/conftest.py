"""Tiny models shared by the inference tests (session scope: built once; tests never train them)."""

from __future__ import annotations

import pytest
import torch

import medzoo

W = [8, 16, 32, 64]


def build(tasks: dict, aggregator: dict | None = None, name: str = "resnet10", seed: int = 0):
    torch.manual_seed(seed)
    cfg = {"encoder": {"name": name, "widths": W}, "tasks": tasks}
    if aggregator is not None:
        cfg["aggregator"] = aggregator
    return medzoo.create_model(cfg).eval()


@pytest.fixture(scope="session")
def seg3d():
    """3D segmentation (2 classes) plus a volume classifier."""
    return build({"seg": {"type": "segmentation", "level": "volume", "num_classes": 2},
                  "grade": {"type": "classification", "level": "volume", "labels": ["low", "mid", "high"]}})


@pytest.fixture(scope="session")
def cxr():
    """Image-level multilabel + classification + regression heads."""
    return build({"findings": {"type": "multilabel", "level": "image", "labels": ["a", "b", "c"],
                               "thresholds": [0.3, 0.5, 0.7]},
                  "covid": {"type": "classification", "level": "image", "labels": ["neg", "pos"]},
                  "severity": {"type": "regression", "level": "image", "outputs": {"geo": [0, 8]}}})


@pytest.fixture(scope="session")
def series_model():
    """COVIDx-CT style: attention MIL over slices, one patient-level task."""
    return build({"covid_ct": {"type": "classification", "level": "series", "labels": ["normal", "pneu", "covid"]}},
                 aggregator={"name": "attention", "options": {"hidden_features": 16}})
