"""Size budgets, checked from a file's header (or while streaming it) before anything large is allocated.

A few hundred bytes can declare gigabytes: a ``.nii.gz`` of zeros, a PNG under Pillow's own bomb threshold, a
``.csv.gz`` of newlines. Every reader checks the size it is about to allocate against a budget and refuses the file
with :class:`BudgetExceeded` (a :class:`~medzoo.data.manifest.DatasetFormatError` naming the file, the size and the
setting that raises the budget). Nothing is truncated to fit.

=========================  ==================  ==============================================================
environment variable       default             what it bounds
=========================  ==================  ==============================================================
``MEDZOO_MAX_VOLUME_BYTES``  512 MiB           a NIfTI file's voxel data (header dims x item size), a
                                               prepared-cache array, a slice series
``MEDZOO_MAX_PIXELS``        67,108,864        a PNG/JPEG's width x height (8192 x 8192), from its header
``MEDZOO_MAX_TEXT_BYTES``    512 MiB           a listing's text (``.gz`` decompressed as a stream)
``MEDZOO_MAX_TEXT_LINES``    2,000,000         a listing's lines
=========================  ==================  ==============================================================

The defaults hold every public dataset medzoo reads (a 512 x 512 x 1024 int16 CT is 512 MiB; the largest listing,
MIMIC-CXR's metadata, has under 400,000 lines). Raise one by setting its variable (bytes take ``K``/``M``/``G``
suffixes, binary: ``MEDZOO_MAX_VOLUME_BYTES=2G``); it is read at each check, so it also works in a running session.

Example:
    >>> import os, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = p.write_text("x\\n1\\n")
    >>> read_text_capped(p)
    b'x\\n1\\n'
    >>> limit(MAX_PIXELS)
    67108864
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from medzoo.data.manifest import DatasetFormatError

__all__ = ["BudgetExceeded", "MAX_VOLUME_BYTES", "MAX_PIXELS", "MAX_TEXT_BYTES", "MAX_TEXT_LINES", "DEFAULTS",
           "limit", "check_budget", "read_text_capped", "format_bytes"]

MAX_VOLUME_BYTES = "MEDZOO_MAX_VOLUME_BYTES"
MAX_PIXELS = "MEDZOO_MAX_PIXELS"
MAX_TEXT_BYTES = "MEDZOO_MAX_TEXT_BYTES"
MAX_TEXT_LINES = "MEDZOO_MAX_TEXT_LINES"
DEFAULTS = {MAX_VOLUME_BYTES: 512 * 2**20, MAX_PIXELS: 8192 * 8192, MAX_TEXT_BYTES: 512 * 2**20,
            MAX_TEXT_LINES: 2_000_000}
_UNITS = {MAX_VOLUME_BYTES: "bytes", MAX_PIXELS: "pixels", MAX_TEXT_BYTES: "bytes", MAX_TEXT_LINES: "lines"}
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_CHUNK = 1 << 20


class BudgetExceeded(DatasetFormatError):
    """A file declares (or holds) more than a size budget allows; the message names the budget's variable."""


def limit(name: str) -> int:
    """The current value of budget ``name`` (one of the ``MAX_*`` names): its environment variable, else the default.

    Raises:
        ValueError: the variable is set to something that is not a positive size, naming it.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return DEFAULTS[name]
    text = raw.upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _SUFFIXES else ""
    try:
        value = int(float(text[: len(text) - len(unit)]) * _SUFFIXES[unit])
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive number (bytes may end in K, M or G, e.g. 2G)")
    return value


def format_bytes(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it >= 1 (``1.0 GiB``)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def check_budget(path: str | os.PathLike, name: str, amount: int, what: str) -> None:
    """Refuse ``amount`` (in the budget's unit) when it exceeds budget ``name``.

    Args:
        path: the file, named in the error.
        name: the budget (``MAX_VOLUME_BYTES``...).
        amount: what the file declares or holds.
        what: how the amount came about, for the message (``"header shape (1024, 1024, 1024) x uint8"``).

    Raises:
        BudgetExceeded: ``amount`` is over the budget.
    """
    cap = limit(name)
    if amount <= cap:
        return
    unit = _UNITS[name]
    shown = (f"{format_bytes(amount)} ({what})", format_bytes(cap)) if unit == "bytes" else \
        (f"{amount:,} {unit} ({what})", f"{cap:,} {unit}")
    raise BudgetExceeded(path, f"{shown[0]} exceeds the budget of {shown[1]}; refused before allocating it. "
                               f"If the file is genuine, raise the budget: {name}=<larger value>")


def read_text_capped(path: str | os.PathLike) -> bytes:
    """The bytes of a text file (a ``.gz`` is decompressed as a stream), within the text budgets.

    The file is read in 1 MiB chunks, counting bytes and line breaks, so a listing over ``MEDZOO_MAX_TEXT_BYTES``
    or ``MEDZOO_MAX_TEXT_LINES`` is refused after reading at most one chunk past the budget. Special files (a FIFO,
    ``/dev/zero``) are refused without reading.

    Raises:
        DatasetFormatError: missing, not a regular file, unreadable or corrupt ``.gz``, naming the file.
        BudgetExceeded: over a text budget.
    """
    p = Path(path)
    if not p.exists():
        raise DatasetFormatError(p, "file not found")
    if not p.is_file():
        raise DatasetFormatError(p, "not a regular file (a folder, FIFO or device); expected a text file")
    gz = p.name.endswith(".gz")
    chunks, size, lines = [], 0, 0
    try:
        with (gzip.open(p, "rb") if gz else open(p, "rb")) as fh:
            while chunk := fh.read(_CHUNK):
                size += len(chunk)
                lines += max(chunk.count(b"\n"), chunk.count(b"\r"))  # at most the lines splitlines() gives
                check_budget(p, MAX_TEXT_BYTES, size, "decompressed text so far" if gz else "text so far")
                check_budget(p, MAX_TEXT_LINES, lines, "line breaks so far")
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as e:  # a corrupt .gz raises zlib.error, not OSError
        raise DatasetFormatError(p, f"cannot read file ({e})") from None
    return b"".join(chunks)
