"""HTTP and local-file transfers for :mod:`medzoo.zoo.download`: resumable ``.part`` files with HTTP ``Range``.

Verification, caching, locking and the public API live in :mod:`medzoo.zoo.download`. The limits enforced here:

* a total deadline per download and a minimum throughput over a window, so that a server trickling bytes cannot
  hold the download (and the cache lock every other process waits on) for ever;
* a byte cap (``opts["max_bytes"]``): the exact size when the catalog gives one, else a cap for unpinned files;
* redirects only between ``http``/``https`` and never from ``https`` down to ``http``;
* a resume only when the copy on disk is provably a prefix of the same file: the first response's strong ETag or
  Last-Modified came back unchanged, or a full sha256 will check the result. Otherwise the transfer restarts at
  byte 0, because splicing two versions of an unpinned file would pin the hybrid;
* a full disk deletes the ``.part`` (keeping it would keep the disk full) and names the path.
"""

from __future__ import annotations

import errno
import functools
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

TIMEOUT_S = 30.0  # one socket read
CHUNK = 1 << 16
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DownloadError(RuntimeError):
    """No source delivered a good copy; the message lists each source and why it failed."""


class IntegrityError(DownloadError):
    """A file's sha256 or size differs from what the catalog (or the recorded pin) expects."""


class _Transient(Exception):
    """A retryable transfer failure (dropped connection, timeout, 5xx); the ``.part`` file is kept."""


def _named_os_error(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name: a failing ``write()`` carries none, so ENOSPC would name no file."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file next to ``path``, fsync it, then ``os.replace`` it into place.

    Raises:
        OSError: naming ``path`` (a full disk included); the temp file is removed.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _named_os_error(exc, path) from exc
    finally:
        tmp.unlink(missing_ok=True)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to ``http``/``https``, never from ``https`` to ``http`` (urllib allows ``ftp``)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:  # noqa: D102
        old, new = urlparse(req.full_url).scheme, urlparse(newurl).scheme
        if new not in ("http", "https"):
            raise DownloadError(f"{req.full_url}: redirect ({code}) to {newurl!r} refused: only http and https")
        if old == "https" and new == "http":
            raise DownloadError(f"{req.full_url}: redirect ({code}) to {newurl!r} refused: https must not downgrade "
                                "to http")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@functools.lru_cache(maxsize=1)
def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_SafeRedirects)


def _is_local(src: str) -> bool:
    return urlparse(src).scheme in ("", "file") or (len(src) > 1 and src[1] == ":")


def _local_path(src: str) -> Path:
    parsed = urlparse(src)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(src).expanduser()


def _copy_local(src: str, part: Path, size: int | None, max_bytes: int | None = None) -> None:
    path = _local_path(src)
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    n = path.stat().st_size
    if size is not None and n != size:
        raise IntegrityError(f"{src}: the file has {n} bytes, expected {size}; not copied")
    if max_bytes is not None and n > max_bytes:
        raise DownloadError(f"{src}: the file has {n:,} bytes, over the {max_bytes:,}-byte cap; not copied")
    try:
        with open(path, "rb") as fi, open(part, "wb") as fo:
            shutil.copyfileobj(fi, fo, CHUNK)
            fo.flush()
            os.fsync(fo.fileno())
    except OSError as exc:
        _drop_on_disk_full(exc, part, n)
        raise
    _meta_path(part).unlink(missing_ok=True)


def _drop_on_disk_full(exc: OSError, part: Path, received: int) -> None:
    """On ENOSPC/EDQUOT delete ``part`` and raise an OSError naming it; other errors pass through."""
    if exc.errno not in DISK_FULL:
        return
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)
    raise OSError(exc.errno, f"{os.strerror(exc.errno)} after {received:,} bytes; the partial download was deleted "
                  "to free the space", str(part)) from None


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
            time.sleep(min(2.0, 0.25 * attempt, max(0.0, _remaining(opts))))


def _remaining(opts: dict[str, Any]) -> float:
    """Seconds left before the download's deadline (raises when it has passed)."""
    left = opts["deadline"] - time.monotonic()
    if left <= 0:
        raise DownloadError(f"gave up: the download did not finish within its {opts['deadline_s']:g} s deadline")
    return left


def _http_attempt(url: str, part: Path, size: int | None, opts: dict[str, Any]) -> None:
    offset = _resume_offset(url, part, size, opts)
    if size is not None and offset == size:
        return
    req = urllib.request.Request(url, headers={"User-Agent": f"medzoo/{__version__}"})
    validator = _read_meta(part).get("validator") if offset else None
    if offset:
        req.add_header("Range", f"bytes={offset}-")
        if validator:
            req.add_header("If-Range", validator)
    try:
        resp = _opener().open(req, timeout=min(TIMEOUT_S, _remaining(opts)))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 or exc.code >= 500:
            part.unlink(missing_ok=True)  # 416: our partial copy is not a prefix of the file
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise _Transient(f"connection failed: {exc}") from None
    with resp:
        offset = _check_response(url, resp, part, offset, size, opts)
        _stream(url, resp, part, offset, opts)


def _resume_offset(url: str, part: Path, size: int | None, opts: dict[str, Any]) -> int:
    """Bytes of ``part`` that can be resumed from ``url`` (0 after discarding an unusable partial copy)."""
    if not part.is_file():
        return 0
    n = part.stat().st_size
    meta = _read_meta(part)
    if n and meta.get("url") == url and (size is None or n <= size):
        if meta.get("validator") or opts["hash_pinned"]:
            return n
        log.warning("%s: the server gave no ETag or Last-Modified, so the %d bytes kept cannot be shown to belong to "
                    "the same file; restarting from byte 0", url, n)
    part.unlink()
    return 0


def _validator(headers: Any) -> str | None:
    """A strong ETag, else Last-Modified (a weak ETag cannot be used in If-Range)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _check_response(url: str, resp: Any, part: Path, offset: int, size: int | None, opts: dict[str, Any]) -> int:
    """Validate status and declared sizes; returns the offset the body starts at (0 if Range was ignored)."""
    length = resp.headers.get("Content-Length")
    length = int(length) if length is not None and length.isdigit() else None
    if offset and resp.status == 206:
        start = resp.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
        if start != str(offset):
            part.unlink(missing_ok=True)
            raise _Transient(f"asked for bytes from {offset}, the server sent {resp.headers.get('Content-Range')}")
        stored = _read_meta(part).get("validator")
        if not opts["hash_pinned"] and _validator(resp.headers) != stored:
            part.unlink(missing_ok=True)  # the server ignored If-Range: these bytes may be another version
            raise _Transient(f"the resumed response's validator {_validator(resp.headers)!r} differs from the first "
                             f"response's {stored!r}; restarting from byte 0")
    elif offset:
        log.info("%s ignored the Range request; downloading from the start", url)
        offset = 0
    total = None if length is None else offset + length
    if size is not None and total is not None and total != size:
        part.unlink(missing_ok=True)
        raise IntegrityError(f"{url}: the server declares {total} bytes, the catalog says {size}; refused")
    cap = opts.get("max_bytes")
    if cap is not None and total is not None and total > cap:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the server declares {total:,} bytes, over the {cap:,}-byte cap for this file")
    if offset == 0:
        meta = json.dumps({"url": url, "validator": _validator(resp.headers), "total": total}).encode("utf-8")
        atomic_write_bytes(_meta_path(part), meta)
    return offset


def _stream(url: str, resp: Any, part: Path, offset: int, opts: dict[str, Any]) -> None:
    length = resp.headers.get("Content-Length")
    total = offset + int(length) if length is not None and length.isdigit() else None
    cap = opts.get("max_bytes")
    received = offset
    rate = _RateGuard(url, opts)
    bar = tqdm(total=total or cap, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
               desc=opts["label"], disable=not (opts["progress"] and sys.stderr.isatty()))
    try:
        with bar, open(part, "ab" if offset else "wb") as f:
            try:
                for chunk in iter(lambda: resp.read1(CHUNK), b""):  # read1: returns what has arrived, no waiting
                    received += len(chunk)
                    if cap is not None and received > cap:
                        _over_cap(url, part, cap, opts)
                    f.write(chunk)
                    bar.update(len(chunk))
                    rate.update(len(chunk))
            except (TimeoutError, http.client.IncompleteRead, ConnectionError) as exc:
                raise _Transient(f"connection lost after {received} bytes ({type(exc).__name__})") from None
            finally:
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        _drop_on_disk_full(exc, part, received)
        raise _named_os_error(exc, part) from exc
    if total is not None and received < total:
        raise _Transient(f"connection closed after {received} of {total} bytes")


def _over_cap(url: str, part: Path, cap: int, opts: dict[str, Any]) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)
    if opts.get("size") is not None:
        raise IntegrityError(f"{url}: the server sent more than the {cap} bytes the catalog declares")
    raise DownloadError(f"{url}: the server sent more than {cap:,} bytes, the cap for this unpinned file "
                        f"({opts.get('cap_reason', 'default')}); refused and deleted")


class _RateGuard:
    """Raise when the deadline passes or the average rate over a window falls below ``opts['min_rate']``."""

    def __init__(self, url: str, opts: dict[str, Any]) -> None:
        self.url, self.opts = url, opts
        self.start, self.count = time.monotonic(), 0

    def update(self, n: int) -> None:
        self.count += n
        _remaining(self.opts)
        elapsed = time.monotonic() - self.start
        if elapsed >= self.opts["rate_window"]:
            if self.count / elapsed < self.opts["min_rate"]:
                raise DownloadError(f"{self.url}: too slow: {self.count} bytes in {elapsed:.1f} s, under the minimum "
                                    f"of {self.opts['min_rate']:g} bytes/s")
            self.start, self.count = time.monotonic(), 0


def _read_meta(part: Path) -> dict[str, Any]:
    try:
        return json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
