"""Shared pieces of the dataset readers: line-numbered text and CSV reading, safe path resolution, value parsing.

Every helper raises :class:`~medzoo.data.manifest.DatasetFormatError` naming the file and the 1-based line of bad
input. Readers catch it per record and hand it to an :class:`~medzoo.data.manifest.ErrorCollector`, which raises
(``on_error="raise"``) or records the skip (``on_error="skip"``).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.csv").write_text("x,y\\n1,2\\n")
    >>> table = read_csv(d / "a.csv", ErrorCollector())
    >>> table.header, [(n, row) for n, row in table.rows]
    (['x', 'y'], [(2, ['1', '2'])])
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.data.budget import read_text_capped
from medzoo.data.manifest import DatasetFormatError, ErrorCollector, Manifest, Record

__all__ = [
    "CsvTable",
    "read_lines",
    "read_listing_lines",
    "read_csv",
    "row_dict",
    "resolve_path",
    "require_file",
    "parse_float",
    "first_existing",
    "fill_missing_tasks",
    "select_split",
    "DirIndex",
    "make_manifest",
    "drop_duplicate_ids",
    "view_filter",
    "keep_views",
]

log = logging.getLogger(__name__)
NAN = float("nan")


def _open_bytes(path: Path) -> bytes:
    # Streamed within the text budgets: a 100 KB .csv.gz can hold 100 MB of line breaks.
    return read_text_capped(path)


def read_lines(path: str | Path, errors: ErrorCollector) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of a UTF-8 text file (``.gz`` is decompressed).

    A leading byte-order mark and line endings are stripped. A line that is not valid UTF-8 is reported to
    ``errors`` with its line number and is not yielded.
    """
    path = Path(path)
    data = _open_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.handle(
                DatasetFormatError(
                    path, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    "expected a UTF-8 text file", number,
                )
            )


def read_listing_lines(path: str | Path, errors: ErrorCollector, expected: str) -> list[tuple[int, str]]:
    """The non-blank ``(line_number, text)`` lines of a header-less listing.

    A listing without any (a 0-byte or blank file, often a cut download) is reported to ``errors`` as a bad file, so
    that its missing records are never dropped silently.
    """
    lines = [(n, t) for n, t in read_lines(path, errors) if t.strip()]
    if not lines:
        errors.handle(DatasetFormatError(path, f"empty file; expected lines like {expected!r}"))
    return lines


@dataclass
class CsvTable:
    """A CSV file's header and its data rows, each with its 1-based line number."""

    path: Path
    header: list[str]
    header_line: int
    rows: list[tuple[int, list[str]]]

    def column(self, *names: str, required: bool = True) -> str | None:
        """The first of ``names`` present in the header; raises naming the header line when none is."""
        for name in names:
            if name in self.header:
                return name
        if required:
            raise DatasetFormatError(
                self.path, f"missing column {' or '.join(repr(n) for n in names)}; header has {self.header}",
                self.header_line,
            )
        return None


def _physical_lines(path: Path, errors: ErrorCollector, comment: str | None) -> list[tuple[int, str]]:
    """``(line_number, text)`` with line ends kept, since a quoted field may span lines.

    A line that is not UTF-8 is dropped and reported: raised when it comes before the header (the next line would
    be taken for the header), else handed to ``errors``.
    """
    data = _open_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out: list[tuple[int, str]] = []
    bad: list[DatasetFormatError] = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            out.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            bad.append(DatasetFormatError(path, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                          f"{e.start + 1}); expected a UTF-8 text file", number))
    first = next((n for n, t in out if t.strip() and not (comment and t.lstrip().startswith(comment))), None)
    for err in bad:
        (errors if first is not None and err.line > first else ErrorCollector("raise")).handle(err)
    return out


class _RecordFeed:
    """Feeds physical lines to :func:`csv.reader` and remembers where the current record started.

    Blank lines and ``comment`` lines are skipped only between records, never inside a quoted field.
    """

    def __init__(self, lines: list[tuple[int, str]], comment: str | None) -> None:
        self.lines, self.comment = lines, comment
        self.pos = 0  # index of the next physical line
        self.start: int | None = None  # index of the current record's first line

    def __iter__(self) -> _RecordFeed:
        return self

    def __next__(self) -> str:
        while self.pos < len(self.lines):
            text = self.lines[self.pos][1]
            self.pos += 1
            if self.start is None:
                if not text.strip() or (self.comment and text.lstrip().startswith(self.comment)):
                    continue
                self.start = self.pos - 1
            return text
        raise StopIteration

    def line(self) -> int:
        """1-based line number where the current record started."""
        return self.lines[self.start or 0][0]


def _check_header(path: Path, header: list[str], line: int) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name and name in seen:
            raise DatasetFormatError(path, f"duplicate column {name!r} in the header (columns {seen[name]} and {i}); "
                                     "every column name must be unique", line)
        seen.setdefault(name, i)


def read_csv(
    path: str | Path, errors: ErrorCollector, *, comment: str | None = None, delimiter: str = ","
) -> CsvTable:
    """Read an RFC 4180 CSV file: quoted fields may hold the delimiter, quotes and line breaks.

    Each row carries the 1-based line its record starts on. Blank lines and ``comment``-prefixed lines between
    records are skipped. A malformed record (for example a quoted field that is never closed) is reported to
    ``errors`` at its first line, and reading resumes on the next line. A header naming one column twice is an
    error naming the file, the line and the column.
    """
    path = Path(path)
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[int, list[str]]] = []
    # A bad line before the header is never skipped: the next line would be taken as the header.
    header_guard = ErrorCollector("raise")
    before_header = lambda: header is None  # noqa: B023, E731  (late binding is the point: it reads the loop state)
    feed = _RecordFeed(_physical_lines(path, errors, comment), comment)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    while True:
        feed.start = None
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            reason = ("a quoted field opened here is never closed" if feed.pos >= len(feed.lines) and
                      "end of data" in str(e) else str(e))
            (header_guard if before_header() else errors).handle(
                DatasetFormatError(path, f"malformed CSV record ({reason})", feed.line()))
            feed.pos = (feed.start or 0) + 1  # resume on the line after the bad record's first line
            reader = csv.reader(feed, delimiter=delimiter, strict=True)
            continue
        if header is None:
            header, header_line = [f.strip() for f in fields], feed.line()
            _check_header(path, header, header_line)
        else:
            rows.append((feed.line(), fields))
    if header is None:
        raise DatasetFormatError(path, "empty file; expected a header line")
    return CsvTable(path, header, header_line, rows)


def row_dict(table: CsvTable, line: int, fields: list[str], *, header: list[str] | None = None) -> dict[str, str]:
    """Map a row onto the header; trailing empty fields beyond it are tolerated, any other count is an error."""
    header = header if header is not None else table.header
    if len(fields) > len(header) and not any(f.strip() for f in fields[len(header):]):
        fields = fields[: len(header)]
    if len(fields) != len(header):
        raise DatasetFormatError(
            table.path, f"wrong number of fields: got {len(fields)}, expected {len(header)} ({', '.join(header)})",
            line,
        )
    return dict(zip(header, fields))


def resolve_path(
    base: str | Path, rel: str, listing: str | Path, line: int | None, *, allow_absolute: bool = False
) -> str:
    """Join ``rel`` onto ``base`` and return an absolute, normalised path that stays inside ``base``.

    Raises:
        DatasetFormatError: empty path, an absolute path (unless ``allow_absolute``), or ``..`` escaping ``base``.
    """
    rel = rel.strip()
    if not rel:
        raise DatasetFormatError(listing, "empty image path", line)
    if os.path.isabs(rel):
        if allow_absolute:
            return os.path.normpath(rel)
        raise DatasetFormatError(listing, f"absolute path {rel!r}; expected a path relative to {base}", line)
    base_abs = os.path.abspath(base)
    full = os.path.normpath(os.path.join(base_abs, rel))
    if os.path.commonpath([base_abs, full]) != base_abs:
        raise DatasetFormatError(listing, f"path {rel!r} escapes the dataset folder {base_abs} (via '..')", line)
    return full


def require_file(path: str, listing: str | Path, line: int | None, what: str = "image", *,
                 allow_dir: bool = False) -> str:
    """Return ``path`` if it is a file (or, with ``allow_dir``, a folder), else raise naming the listing and line."""
    if not os.path.exists(path):
        raise DatasetFormatError(listing, f"{what} not found: {path}", line)
    if not allow_dir and not os.path.isfile(path):
        raise DatasetFormatError(listing, f"{what} {path} is a folder; expected a file", line)
    return path


def first_existing(candidates: list[str], listing: str | Path, line: int | None, what: str = "image") -> str:
    """The first existing path of ``candidates``; raises listing every place that was tried."""
    for c in candidates:
        if os.path.isfile(c):
            return c
    tried = ", ".join(candidates)
    raise DatasetFormatError(listing, f"{what} not found (tried {tried})", line)


def parse_float(value: str, listing: str | Path, line: int, column: str) -> float:
    """Parse a float cell; blank gives NaN, anything non-numeric raises naming the column."""
    value = value.strip()
    if not value:
        return NAN
    try:
        out = float(value)
    except ValueError:
        raise DatasetFormatError(listing, f"column {column!r}: expected a number, got {value!r}", line) from None
    if math.isinf(out):
        raise DatasetFormatError(listing, f"column {column!r}: expected a finite number, got {value!r}", line)
    return out


class DirIndex:
    """Caches ``os.listdir`` of folders so that checking many files costs one listing per folder."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, frozenset[str]]] = {}

    def _entry(self, folder: str | Path) -> tuple[str, frozenset[str]]:
        key = str(folder)
        if key not in self._cache:
            absolute = os.path.abspath(key)
            try:
                names = frozenset(os.listdir(absolute))
            except OSError:
                names = frozenset()
            self._cache[key] = (absolute, names)
        return self._cache[key]

    def names(self, folder: str | Path) -> frozenset[str]:
        """File names in ``folder`` (empty when it does not exist)."""
        return self._entry(folder)[1]

    def find(self, name: str, folders: list[str | Path]) -> str | None:
        """Absolute path of ``name`` in the first of ``folders`` that holds it, or None."""
        for folder in folders:
            absolute, names = self._entry(folder)
            if name in names:
                return absolute + os.sep + name
        return None


def fill_missing_tasks(records: list[Record], label_names: dict[str, list[str]], vector_tasks: set[str]) -> None:
    """Give every record a value for every task: NaN (or an all-NaN vector) where the dataset has none."""
    for rec in records:
        for task, names in label_names.items():
            if task not in rec.labels:
                rec.labels[task] = np.full(len(names), np.nan, dtype=np.float32) if task in vector_tasks else NAN


def select_split(
    kind: str, records: list[Record], split: str | None, available: dict[str, str]
) -> tuple[list[Record], str | None]:
    """Keep the records of an official split.

    Args:
        kind: reader name, for messages.
        records: records with ``meta["official_split"]`` set.
        split: the requested name (or None for all records).
        available: accepted name or alias -> official split name.
    """
    if split is None:
        return records, None
    if split not in available:
        raise ValueError(f"{kind}: unknown split {split!r}; expected one of {sorted(available)} or None")
    name = available[split]
    return [r for r in records if r.meta.get("official_split") == name], name


def make_manifest(
    kind: str, root: str | Path, records: list[Record], label_names: dict[str, list[str]], split: str | None,
    errors: ErrorCollector, vector_tasks: set[str] | None = None,
) -> Manifest:
    """Fill missing task values with NaN and wrap up a manifest, attaching what ``errors`` skipped."""
    fill_missing_tasks(records, label_names, vector_tasks or set())
    return Manifest(kind, str(root), records, label_names, split, list(errors.skipped))


def drop_duplicate_ids(records: list[Record], errors: ErrorCollector) -> list[Record]:
    """Report records whose id repeats an earlier one (ids are unique within a manifest); keep the first."""
    seen: dict[str, Any] = {}
    out = []
    for r in records:
        src = r.meta.get("source") or ("?", None)
        if r.id in seen:
            errors.handle(DatasetFormatError(src[0], f"duplicate record id {r.id!r} (first at {seen[r.id]})", src[1]))
            continue
        seen[r.id] = f"{src[0]}:{src[1]}" if src[1] is not None else src[0]
        out.append(r)
    return out


def view_filter(kind: str, views: str | Sequence[str]) -> frozenset[str] | None:
    """Normalise a ``views=`` option: None for ``"*"`` (every view), else the set of view codes to keep."""
    if isinstance(views, str):
        views = [views]
    wanted = [str(v).strip() for v in views]
    if not wanted or not all(wanted):
        raise ValueError(f"{kind}: views must be '*' or a list of view codes like ['PA', 'AP'], got {views!r}")
    return None if "*" in wanted else frozenset(wanted)


def keep_views(kind: str, records: list[Record], keep: frozenset[str] | None) -> list[Record]:
    """The records whose ``meta["view"]`` is in ``keep`` (all when None); logs how many of each view were left out."""
    if keep is None:
        return records
    kept = [r for r in records if r.meta.get("view") in keep]
    left = Counter(str(r.meta.get("view")) for r in records if r.meta.get("view") not in keep)
    if left:
        counts = ", ".join(f"{v}: {n}" for v, n in sorted(left.items()))
        log.info("%s: kept %d of %d image(s) with views %s; left out %d (%s); pass views='*' to keep all",
                 kind, len(kept), len(records), sorted(keep), sum(left.values()), counts)
    return kept
