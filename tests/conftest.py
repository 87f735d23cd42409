"""Shared fixtures. Tests run on the CPU with tiny widths and inputs, so the default suite fits a small machine."""

from __future__ import annotations

import os

import pytest
import torch

TINY_WIDTHS = (8, 16, 32, 64)


@pytest.fixture(autouse=True)
def _seed_and_home(tmp_path_factory, monkeypatch):
    """Seed torch for every test and point MEDZOO_HOME at a temporary cache, so no test touches ~/.cache."""
    torch.manual_seed(0)
    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path_factory.mktemp("medzoo_home")))
    monkeypatch.delenv("MEDZOO_OFFLINE", raising=False)
    yield


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """Two threads at most: the machine is small and shared."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
