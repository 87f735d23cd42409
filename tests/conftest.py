"""Shared fixtures. Tests run on the CPU with tiny widths and inputs, so the default suite fits a small machine.

The plain functions behind them (tiny model configs, random BatchNorm statistics, tiny exports, the local HTTP
server) are in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import medzoo
from medzoo.data.synth import write_synthetic_corpus
from tests.helpers import CXR_TASKS, LocalServer, randomize_bn, serve, tiny_config, write_tiny_export


@pytest.fixture(autouse=True)
def _seed_and_home(tmp_path_factory, monkeypatch):
    """Seed torch for every test and point MEDZOO_HOME at a temporary cache, so no test touches ~/.cache."""
    torch.manual_seed(0)
    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path_factory.mktemp("medzoo_home")))
    monkeypatch.delenv("MEDZOO_OFFLINE", raising=False)
    yield


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """Two threads at most (the machine is small and shared); one per process when pytest-xdist runs several, so
    the workers share the cores instead of fighting over them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // workers))
    yield


@pytest.fixture
def tiny_model_cfg() -> dict[str, Any]:
    """A fresh tiny model config (resnet10 at widths 8-64) with one image-level multilabel task ``findings``."""
    return tiny_config(CXR_TASKS)


@pytest.fixture
def random_bn_model() -> nn.Module:
    """A tiny resnet18 ``MultiTaskModel`` (one volume-level 2-class task ``cls``) with random BatchNorm statistics,
    in eval mode; built per test, so tests may change it."""
    torch.manual_seed(0)
    model = medzoo.create_model(tiny_config({"cls": {"type": "classification", "level": "volume", "num_classes": 2}},
                                            name="resnet18"))
    return randomize_bn(model)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A fresh local HTTP server on 127.0.0.1 (new switches, empty request log) serving ``tmp_path/served``."""
    with serve(tmp_path / "served") as server:
        yield server


@pytest.fixture(scope="session")
def cxr_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two tiny image-level export directories (``findings``: labels a, b; seeds 1 and 2), written once."""
    root = tmp_path_factory.mktemp("cxr_exports")
    return write_tiny_export(root, "m1", CXR_TASKS, 1), write_tiny_export(root, "m2", CXR_TASKS, 2)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic corpus without DICOM (a second or so to write), for the training and CLI tests."""
    out = tmp_path_factory.mktemp("corpus")
    write_synthetic_corpus(out, seed=0, size="tiny", dicom=False)
    return out
