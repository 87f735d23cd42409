"""The ``dataset`` registry that every reader module registers its builder in."""

from __future__ import annotations

from medzoo.registry import Registry

__all__ = ["DATASETS"]

#: name -> builder ``fn(root: Path, *, split, errors, **options) -> Manifest``.
DATASETS = Registry("dataset")
