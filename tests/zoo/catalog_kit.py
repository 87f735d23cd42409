"""The shipped catalogs as the catalog tests read them: the two files' paths and their raw YAML entries.

``weights/catalog.yaml`` holds the pinned (shipped) entries, ``weights/catalog-unpinned.yaml`` the opt-in ones.
Shared by the shipped-catalog lint (test_catalog.py) and the spec/loading/CLI tests (test_catalog_spec.py).
"""

from __future__ import annotations

from pathlib import Path

import yaml

CATALOG = Path(__file__).resolve().parents[2] / "weights" / "catalog.yaml"
UNPINNED = CATALOG.with_name("catalog-unpinned.yaml")
RAW = yaml.safe_load(CATALOG.read_text())["entries"]
RAW_UNPINNED = yaml.safe_load(UNPINNED.read_text())["entries"]
