"""Fixtures of the recipe tests: the tiny synthetic corpus, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """The tiny synthetic corpus (NIH, TB sets, severity CSV with masks; no DICOM)."""
    from medzoo.data.synth import write_synthetic_corpus

    out = tmp_path_factory.mktemp("recipe_corpus")
    write_synthetic_corpus(out, seed=0, size="tiny", dicom=False)
    return out
