"""Tiny models shared by the inference tests (session scope: built once; tests never train them)."""

from __future__ import annotations

import pytest

from tests.helpers import build_model


@pytest.fixture(scope="session")
def seg3d():
    """3D segmentation (2 classes) plus a volume classifier."""
    return build_model({"seg": {"type": "segmentation", "level": "volume", "num_classes": 2},
                        "grade": {"type": "classification", "level": "volume", "labels": ["low", "mid", "high"]}})


@pytest.fixture(scope="session")
def cxr():
    """Image-level multilabel + classification + regression heads."""
    return build_model({"findings": {"type": "multilabel", "level": "image", "labels": ["a", "b", "c"],
                                     "thresholds": [0.3, 0.5, 0.7]},
                        "covid": {"type": "classification", "level": "image", "labels": ["neg", "pos"]},
                        "severity": {"type": "regression", "level": "image", "outputs": {"geo": [0, 8]}}})


@pytest.fixture(scope="session")
def series_model():
    """COVIDx-CT style: attention MIL over slices, one patient-level task."""
    tasks = {"covid_ct": {"type": "classification", "level": "series", "labels": ["normal", "pneu", "covid"]}}
    return build_model(tasks, aggregator={"name": "attention", "options": {"hidden_features": 16}})
