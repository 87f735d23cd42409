"""Dataset readers: one module per family of public on-disk formats, all behind :func:`open_dataset`.

Each reader turns a downloaded dataset folder into a :class:`~medzoo.data.manifest.Manifest` without decoding
any image. Readers share these rules:

- image paths are resolved to absolute paths, and a listed path that escapes the dataset folder is an error;
- a missing image, a malformed or short line, an unknown label, or a line that is not UTF-8 raises
  :class:`~medzoo.data.manifest.DatasetFormatError` naming the listing file and its 1-based line;
- with ``on_error="skip"`` the bad records are dropped instead, listed in ``manifest.skipped`` and summarised in
  the log;
- every record's ``meta["source"]`` is ``(listing file, line)``; ``line`` is None for folder-listed datasets,
  where the file is the image itself.

Kinds: ``nih-cxr14``, ``chexpert``, ``mimic-cxr-jpg``, ``padchest``, ``vindr-cxr``, ``rsna-pneumonia``,
``montgomery``, ``shenzhen``, ``tbx11k``, ``covidx-cxr``, ``covidx-ct``, ``covid-severity``, ``msd``,
``medicalnet-list``, ``nifti-folder`` and ``csv`` (a generic "paths plus label columns" reader). CSV files are read
as RFC 4180 (quoted delimiters and line breaks); a header naming a column twice is an error. Every record's
``patient_id`` is the dataset's patient key (the image id where a dataset has none); ``docs/DATASETS.md`` lists
each reader's label semantics and defaults.

Example:
    >>> from medzoo.data import open_dataset
    >>> m = open_dataset("nih-cxr14", "/data/ChestX-ray14", split="test")  # doctest: +SKIP
    >>> m.label_names["findings"][:3], m[0].labels["findings"].shape  # doctest: +SKIP
    (['Atelectasis', 'Cardiomegaly', 'Effusion'], (14,))
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from medzoo.data.manifest import ErrorCollector, ErrorPolicy, Manifest
from medzoo.data.readers import (  # noqa: F401  (importing registers the readers)
    chexpert,
    covidx,
    csvgeneric,
    mimic,
    nih,
    padchest,
    rsna,
    severity,
    tb,
    tbx11k,
    vindr,
    volumes,
)
from medzoo.data.readers._registry import DATASETS

__all__ = ["open_dataset", "list_datasets", "DATASETS"]

log = logging.getLogger(__name__)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered dataset kinds matching a shell-style ``pattern``.

    Example:
        >>> "nih-cxr14" in list_datasets()
        True
    """
    return DATASETS.list(pattern)


def _check_options(kind: str, builder: Any, options: dict[str, Any]) -> None:
    params = inspect.signature(builder).parameters
    valid = sorted(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in ("split", "errors"))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"dataset {kind!r}: unknown option(s) {unknown}; valid options: {valid}")


def open_dataset(
    kind: str, root: str | Path, *, split: str | None = None, on_error: ErrorPolicy = "raise", **options: Any
) -> Manifest:
    """Read a dataset folder (or listing file) into a Manifest of records; no image is decoded.

    Args:
        kind: a registered dataset kind (see :func:`list_datasets`).
        root: the dataset folder as downloaded (for ``csv`` and ``medicalnet-list``, the listing file).
        split: an official split name where the dataset has one (for example ``"test"``), or None for all.
        on_error: ``"raise"`` stops at the first bad record; ``"skip"`` drops it and lists it in
            ``manifest.skipped`` with file, line and reason.
        **options: reader options (for example ``uncertainty="u-ones"`` for CheXpert).

    Returns:
        The manifest; each record's ``image`` is an absolute path (or an ordered list of paths for a series).

    Raises:
        KeyError: unknown kind (the message lists the valid ones).
        TypeError: an option the reader does not take.
        DatasetFormatError: bad input under ``on_error="raise"``, naming the file and line.

    Example:
        >>> m = open_dataset("chexpert", "/data/CheXpert-v1.0-small", uncertainty="u-ones")  # doctest: +SKIP
    """
    builder = DATASETS.get(kind)
    _check_options(kind, builder, options)
    errors = ErrorCollector(on_error)
    manifest = builder(Path(root).expanduser(), split=split, errors=errors, **options)
    manifest.skipped = errors.finish(kind)
    log.info("%s: %d record(s) from %s%s", kind, len(manifest), root, f" (split {split})" if split else "")
    return manifest
