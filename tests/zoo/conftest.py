"""Fixtures for the zoo tests: an isolated MEDZOO_HOME (the HTTP server is a root fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def medzoo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty MEDZOO_HOME; MEDZOO_OFFLINE and MEDZOO_CATALOG unset."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEDZOO_HOME", str(home))
    monkeypatch.delenv("MEDZOO_OFFLINE", raising=False)
    monkeypatch.delenv("MEDZOO_CATALOG", raising=False)
    return home
