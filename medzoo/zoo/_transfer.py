"""HTTP and local-file transfers for :mod:`medzoo.zoo.download`: resumable ``.part`` files with HTTP ``Range``.

Verification, caching, locking and the public API live in :mod:`medzoo.zoo.download`.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from tqdm.auto import tqdm

from medzoo.version import __version__

log = logging.getLogger("medzoo.zoo.download")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file next to ``path``, fsync it, then ``os.replace`` it into place."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

TIMEOUT_S = 30.0

CHUNK = 1 << 16

class DownloadError(RuntimeError):
    """No source delivered a good copy; the message lists each source and why it failed."""


class IntegrityError(DownloadError):
    """A file's sha256 or size differs from what the catalog (or the recorded pin) expects."""


class _Transient(Exception):
    """A retryable transfer failure (dropped connection, timeout, 5xx); the ``.part`` file is kept."""


def _is_local(src: str) -> bool:
    return urlparse(src).scheme in ("", "file") or (len(src) > 1 and src[1] == ":")


def _local_path(src: str) -> Path:
    parsed = urlparse(src)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(src).expanduser()


def _copy_local(src: str, part: Path, size: int | None) -> None:
    path = _local_path(src)
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    n = path.stat().st_size
    if size is not None and n != size:
        raise IntegrityError(f"{src}: the file has {n} bytes, expected {size}; not copied")
    with open(path, "rb") as fi, open(part, "wb") as fo:
        shutil.copyfileobj(fi, fo, CHUNK)
        fo.flush()
        os.fsync(fo.fileno())
    _meta_path(part).unlink(missing_ok=True)


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _http_download(url: str, part: Path, size: int | None, opts: dict[str, Any]) -> None:
    """Fill ``part`` from ``url``, resuming after transient failures, up to ``opts['retries']`` attempts."""
    for attempt in range(opts["retries"]):
        try:
            return _http_attempt(url, part, size, opts)
        except _Transient as exc:
            kept = part.stat().st_size if part.is_file() else 0
            if attempt + 1 == opts["retries"]:
                raise _Transient(f"{exc}; gave up after {attempt + 1} attempt(s), {kept} bytes kept in {part} "
                                 f"for the next try to resume") from None
            log.warning("%s: %s; retrying from byte %d", url, exc, kept)
            time.sleep(min(2.0, 0.25 * attempt))


def _http_attempt(url: str, part: Path, size: int | None, opts: dict[str, Any]) -> None:
    offset = _resume_offset(url, part, size)
    if size is not None and offset == size:
        return
    req = urllib.request.Request(url, headers={"User-Agent": f"medzoo/{__version__}"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
        validator = _read_meta(part).get("validator")
        if validator:
            req.add_header("If-Range", validator)
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 or exc.code >= 500:
            part.unlink(missing_ok=True)  # 416: our partial copy is not a prefix of the file
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise _Transient(f"connection failed: {exc}") from None
    with resp:
        offset = _check_response(url, resp, part, offset, size)
        _stream(url, resp, part, offset, size, opts)


def _resume_offset(url: str, part: Path, size: int | None) -> int:
    """Bytes of ``part`` that can be resumed from ``url`` (0 after discarding an unusable partial copy)."""
    if not part.is_file():
        return 0
    n = part.stat().st_size
    if n and _read_meta(part).get("url") == url and (size is None or n <= size):
        return n
    part.unlink()
    return 0


def _check_response(url: str, resp: Any, part: Path, offset: int, size: int | None) -> int:
    """Validate status and declared sizes; returns the offset the body starts at (0 if Range was ignored)."""
    length = resp.headers.get("Content-Length")
    length = int(length) if length is not None and length.isdigit() else None
    if offset and resp.status == 206:
        start = resp.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
        if start != str(offset):
            part.unlink(missing_ok=True)
            raise _Transient(f"asked for bytes from {offset}, the server sent {resp.headers.get('Content-Range')}")
    elif offset:
        log.info("%s ignored the Range request; downloading from the start", url)
        offset = 0
    total = None if length is None else offset + length
    if size is not None and total is not None and total != size:
        part.unlink(missing_ok=True)
        raise IntegrityError(f"{url}: the server declares {total} bytes, the catalog says {size}; refused")
    if offset == 0:
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        meta = json.dumps({"url": url, "validator": validator, "total": total}).encode("utf-8")
        atomic_write_bytes(_meta_path(part), meta)
    return offset


def _stream(url: str, resp: Any, part: Path, offset: int, size: int | None, opts: dict[str, Any]) -> None:
    length = resp.headers.get("Content-Length")
    total = offset + int(length) if length is not None and length.isdigit() else None
    received = offset
    bar = tqdm(total=total or size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
               desc=opts["label"], disable=not (opts["progress"] and sys.stderr.isatty()))
    with bar, open(part, "ab" if offset else "wb") as f:
        try:
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                received += len(chunk)
                if size is not None and received > size:
                    raise IntegrityError(f"{url}: the server sent more than the {size} bytes the catalog declares")
                f.write(chunk)
                bar.update(len(chunk))
        except (TimeoutError, http.client.IncompleteRead, ConnectionError) as exc:
            raise _Transient(f"connection lost after {received} bytes ({type(exc).__name__})") from None
        finally:
            f.flush()
            os.fsync(f.fileno())
    if total is not None and received < total:
        raise _Transient(f"connection closed after {received} of {total} bytes")


def _read_meta(part: Path) -> dict[str, Any]:
    try:
        return json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
