"""Writes that either complete or leave nothing, and whose failures name the file.

- :func:`atomic_write` writes a temp file next to the destination and renames it into place, so a reader (or a
  re-run after SIGKILL) sees the old file or the new one, never half of one; after a failure the temp file is gone.
- :func:`naming_path` gives an ``OSError`` raised without a file name (a failing ``write()`` on a full disk reports
  only ``[Errno 28] No space left on device``) the path being written.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write(p, '{"done": true}')
    >>> p.read_text()
    '{"done": true}'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "naming_path"]


@contextlib.contextmanager
def naming_path(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file as the same error naming ``path``.

    Raises:
        OSError: the original error (it already names a file, or has no errno), else a copy naming ``path``.
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise type(err)(err.errno, err.strerror or str(err), os.fspath(path)) from err


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> None:
    """Write ``data`` (text is encoded with ``encoding``) to ``path`` through a temp file and ``os.replace``.

    Raises:
        OSError: the write failed; an error without a file name (a full disk) names ``path``, the file the caller
            asked for. ``path`` is untouched and no temp file is left.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    payload = data.encode(encoding) if isinstance(data, str) else data
    try:
        with naming_path(p), open(tmp, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
