"""Content fingerprints: what a cache key needs so that an edited input is never mistaken for the one cached.

A name says nothing about what a file holds now: an image overwritten in place, a listing re-exported, weights
replaced under the same path all keep their names. Two kinds of file are fingerprinted differently:

- **small files that define a whole run** (listings, weights): the sha256 of their bytes, so any change is seen;
- **dataset images and masks** (thousands, gigabytes): size and modification time in nanoseconds, one ``stat``
  each. Any write changes them; only a deliberate restore of the old mtime (``touch -r``) on a file of the same size
  would go unseen, which is why the listings that name those files are hashed.

Example:
    >>> import tempfile, pathlib
    >>> from medzoo.data.manifest import Record
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.png").write_bytes(b"x")
    >>> before = records_fingerprint([Record("a", "p", str(d / "a.png"))])
    >>> _ = (d / "a.png").write_bytes(b"yy")
    >>> records_fingerprint([Record("a", "p", str(d / "a.png"))]) == before
    False
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medzoo.data.manifest import Record

__all__ = ["sha256_file", "stat_signature", "content_signature", "records_fingerprint", "record_files"]

_HASH_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def stat_signature(path: str | os.PathLike) -> list[Any]:
    """``[path, size, mtime_ns]`` of a file, or ``[path, None, None]`` when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return [os.fspath(path), None, None]
    return [os.fspath(path), st.st_size, st.st_mtime_ns]


def content_signature(path: str | os.PathLike) -> list[Any]:
    """``[path, size, sha256]`` of a file (``[path, None, None]`` when missing); a folder's files, sorted, each so."""
    p = Path(path)
    if p.is_dir():
        return [os.fspath(p), [content_signature(f) for f in sorted(p.rglob("*")) if f.is_file()]]
    if not p.is_file():
        return [os.fspath(p), None, None]
    return [os.fspath(p), p.stat().st_size, sha256_file(p)]


def record_files(record: Record) -> Iterator[str]:
    """Every image and mask path a record reads (a series gives each slice)."""
    for spec in (record.image, record.meta.get("mask")):
        if spec is None:
            continue
        yield from ([os.fspath(spec)] if isinstance(spec, (str, os.PathLike)) else [os.fspath(s) for s in spec])


def records_fingerprint(records: Iterable[Record]) -> str:
    """sha256 over the stat signature of every file the records read and the content hash of their listings.

    A listing is a record's ``meta["source"]`` file (the CSV, JSON or text file it came from); folder-listed
    datasets have a folder there, which adds nothing beyond its images.
    """
    h = hashlib.sha256()
    listings: set[str] = set()
    for rec in records:
        h.update(json.dumps([stat_signature(f) for f in record_files(rec)]).encode())
        source = rec.meta.get("source")
        if isinstance(source, (list, tuple)) and source and os.path.isfile(source[0]):
            listings.add(os.fspath(source[0]))
    for listing in sorted(listings):
        h.update(json.dumps(content_signature(listing)).encode())
    return h.hexdigest()
