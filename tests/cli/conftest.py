"""CLI test fixtures: the tiny synthetic corpus of the training tests."""

from __future__ import annotations

from tests.train.conftest import corpus  # noqa: F401  (re-exported fixture)
