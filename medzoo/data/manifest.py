"""Records and manifests: what every dataset reader returns.

A :class:`Manifest` is a sequence of :class:`Record` s plus the label names of each task. Images are not read
here; a record holds paths. Readers raise :class:`DatasetFormatError` naming the file and line of bad input,
or, with ``on_error="skip"``, collect a :class:`SkippedRecord` for each bad record in ``manifest.skipped``.

Example:
    >>> import math
    >>> rec = Record(id="a", patient_id="p1", image="a.png", labels={"tb": 1}, meta={"source": ("m.csv", 2)})
    >>> m = Manifest(kind="demo", root=".", records=[rec], label_names={"tb": ["tb"]})
    >>> len(m), m[0].patient_id
    (1, 'p1')
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

__all__ = ["DatasetFormatError", "Record", "SkippedRecord", "Manifest", "ErrorPolicy", "ErrorCollector"]

log = logging.getLogger(__name__)

ErrorPolicy = Literal["raise", "skip"]


class DatasetFormatError(ValueError):
    """Bad input in a dataset file. The message names the file, the line (1-based) when known, and what was expected.

    Attributes:
        path: the offending file.
        line: 1-based line number, or None when the problem is not tied to a line.
        reason: what was wrong and what was expected.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {reason}")


@dataclass
class Record:
    """One sample: an image (or an ordered series of slice paths) and its labels.

    Attributes:
        id: unique within the manifest.
        patient_id: used for patient-level splits and the leakage check.
        image: a path, or an ordered list of paths for a slice series.
        labels: task name -> value. Multilabel tasks: float vector (np.ndarray) with NaN for unknown;
            class tasks: int class index (NaN when unknown); regression: float vector.
        meta: anything else (``source``: (file, line) the record came from; ``mask``; ``bbox``; ``boxes``; ``view``...).
    """

    id: str
    patient_id: str
    image: str | list[str]
    labels: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SkippedRecord:
    """A record dropped under ``on_error="skip"``: where it was and why."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class Manifest(Sequence[Record]):
    """A dataset as a sequence of records.

    Attributes:
        kind: the reader that made it (for example ``"nih-cxr14"``).
        root: the folder the dataset was read from.
        records: the records, in file order.
        label_names: task -> ordered label names (for ``findings``, the vector order; for class tasks, the classes).
        split: the split name, when one was selected.
        skipped: what ``on_error="skip"`` dropped, with file, line and reason.
    """

    kind: str
    root: str | Path
    records: list[Record]
    label_names: dict[str, list[str]] = field(default_factory=dict)
    split: str | None = None
    skipped: list[SkippedRecord] = field(default_factory=list)

    @overload
    def __getitem__(self, i: int) -> Record: ...
    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...
    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        return self.records[i]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def tasks(self) -> list[str]:
        """Task names this manifest labels."""
        return list(self.label_names)

    def patients(self) -> set[str]:
        """The set of patient ids."""
        return {r.patient_id for r in self.records}

    def subset(self, records: Sequence[Record], split: str | None = None) -> Manifest:
        """A manifest with the same kind, root and label names over ``records``."""
        return Manifest(self.kind, self.root, list(records), dict(self.label_names), split or self.split, [])


class ErrorCollector:
    """Applies an ``on_error`` policy: raise at once, or collect what was skipped and log a summary.

    Example:
        >>> errors = ErrorCollector("skip")
        >>> errors.handle(DatasetFormatError("x.csv", "bad row", line=3))
        >>> [str(s) for s in errors.skipped]
        ['x.csv:3: bad row']
    """

    def __init__(self, on_error: ErrorPolicy = "raise") -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.skipped: list[SkippedRecord] = []

    def handle(self, err: DatasetFormatError) -> None:
        """Raise ``err`` under "raise"; record it under "skip"."""
        if self.on_error == "raise":
            raise err
        self.skipped.append(SkippedRecord(err.path, err.line, err.reason))

    def finish(self, kind: str) -> list[SkippedRecord]:
        """Log how many records were skipped and return them."""
        if self.skipped:
            log.warning("%s: skipped %d bad record(s); first: %s", kind, len(self.skipped), self.skipped[0])
        return self.skipped
