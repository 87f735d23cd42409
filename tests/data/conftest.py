"""Fixtures for the dataset tests: ``ds`` writes tiny datasets in their real on-disk formats into ``tmp_path``.

The writers and the fixture file contents live in ``dataset_fixtures.py`` (a uniquely named module, so tests can
import the constants without clashing with other ``conftest`` modules).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.dataset_fixtures import DatasetWriter


@pytest.fixture
def ds(tmp_path: Path) -> DatasetWriter:
    """Writer of tiny datasets in their real formats under ``tmp_path``."""
    return DatasetWriter(tmp_path)
