"""Verified, cached, resumable downloads of catalog files.

* Sources: ``http(s)://``, ``file://`` and plain local paths; a file's ``url`` first, then its mirrors in order.
* Cache: ``$MEDZOO_HOME`` (default ``~/.cache/medzoo``): ``weights/<entry>/<version>/<file>``. A cache hit is
  re-verified: its size always, its full sha256 whenever its size, mtime, ctime or inode differ from when it was
  last verified (a copy that restores the mtime still changes the ctime), when that was over
  :data:`REVERIFY_AFTER_S` ago, or with ``verify=True``. A hit is keyed on content: the pinned sha256, or for an
  unpinned file the url it came from, so an entry whose url changed is fetched again.
* ``MEDZOO_OFFLINE=1``: no network; the cache (and local ``file://``/path sources) only, or a clear error.
* Integrity: the full sha256 and the size are checked before the file is moved into place with ``os.replace``.
  A file that fails is removed. A server that declares or sends a size other than the catalog's is an error.
* Resume: the transfer goes to ``<file>.part``; after a dropped connection the next attempt (or the next call)
  asks for the rest with an HTTP ``Range`` request and restarts when the server ignores it. A file without a full
  sha256 resumes only when the server's strong ETag or Last-Modified proves the bytes kept belong to the same
  version; otherwise it restarts from byte 0.
* Limits: a total deadline (``deadline_s``) and a minimum throughput (``min_bytes_per_s``, averaged over
  :data:`RATE_WINDOW_S`); a byte cap: the catalog's size, else for unpinned files the size the entry's notes give
  (times 1.5), else :data:`UNPINNED_MAX_BYTES`. Redirects stay within http/https and never go https -> http. A full
  disk deletes the ``.part`` and the error names it.
* Concurrency: an exclusive ``fcntl.flock`` on ``<file>.lock``; a second process waits, then finds the cache hit.
* Unpinned files (``sha256: null``) download only with ``allow_unpinned=True``; the computed sha256 and size are
  recorded in ``$MEDZOO_HOME/pins.json`` and verify every later fetch, which then needs no ``allow_unpinned``.
* Prefix-pinned files (``sha256_prefix`` only, as torchvision's ``<name>-<8 hex>.pth``) download without
  ``allow_unpinned``: the content must start with the prefix, and the full hash is recorded on the first fetch.

Example:
    >>> from medzoo.zoo.download import download
    >>> path = download("resnet10.medicalnet23")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from medzoo.zoo._transfer import (
    DISK_FULL,
    DownloadError,
    IntegrityError,
    _copy_local,
    _http_download,
    _is_local,
    _meta_path,
    _Transient,
    atomic_write_bytes,
)
from medzoo.zoo.cache import HOME_ENV, cache_root, file_lock
from medzoo.zoo.catalog import get_entry
from medzoo.zoo.spec import FileSpec, WeightsSpec

__all__ = [
    "DEADLINE_S", "HOME_ENV", "MIN_BYTES_PER_S", "OFFLINE_ENV", "UNPINNED_MAX_BYTES", "DownloadError",
    "IntegrityError", "OfflineError", "UnpinnedError",
    "atomic_write_bytes", "cache_path", "cache_root", "download", "download_all", "file_lock", "is_offline",
    "read_pins", "sha256_file",
]

log = logging.getLogger(__name__)

OFFLINE_ENV = "MEDZOO_OFFLINE"
#: Total time one download() may take, all sources and retries together.
DEADLINE_S = 3 * 3600.0
#: Slowest average throughput accepted over each window of RATE_WINDOW_S seconds.
MIN_BYTES_PER_S = 16 * 1024
RATE_WINDOW_S = 60.0
#: Byte cap for a file whose size neither the catalog nor its notes give (the largest shipped file is ~510 MB).
UNPINNED_MAX_BYTES = 1 << 30
#: A verified cache file is re-hashed when its last verification is older than this (bit rot changes no metadata).
REVERIFY_AFTER_S = 30 * 86400.0
_NOTED_SIZE = re.compile(r"\bsize\b[^.]{0,40}?(\d+(?:\.\d+)?)\s*([KMG])i?B\b", re.IGNORECASE)


class OfflineError(DownloadError):
    """The file is not cached and ``MEDZOO_OFFLINE`` forbids downloading it."""


class UnpinnedError(DownloadError):
    """The catalog pins no sha256 for the file and ``allow_unpinned`` was not given."""


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``$MEDZOO_OFFLINE`` is set to 1/true/yes/on."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cache_path(spec: WeightsSpec | None, file: FileSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``file`` lives in the cache (``weights/<entry>/<version>/<name>``, or ``files/<key>/<name>``)."""
    root = cache_root(cache_dir)
    if spec is not None:
        return root / "weights" / spec.name / spec.version / file.name
    key = file.sha256 or hashlib.sha256(file.url.encode("utf-8")).hexdigest()
    return root / "files" / key[:16] / file.name


def sha256_file(path: str | os.PathLike) -> str:
    """Full lowercase hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_pins(cache_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Hashes recorded for unpinned files: url -> ``{"sha256", "size", "recorded", "source"}``."""
    path = cache_root(cache_dir) / "pins.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DownloadError(f"{path}: not valid JSON ({exc}); fix or delete it to record the pins again") from None


def _record_pin(root: Path, file: FileSpec, sha: str, size: int, source: str) -> None:
    path = root / "pins.json"
    with file_lock(root / "pins.json.lock"):
        pins = read_pins(root)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        pins[file.url] = {"sha256": sha, "size": size, "recorded": now, "source": source}
        atomic_write_bytes(path, (json.dumps(pins, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8"))
    log.warning("recorded sha256 %s (%d bytes) for unpinned %s in %s; pin it in the catalog to make this "
                "check permanent", sha, size, file.url, path)


def download(
    spec_or_file: WeightsSpec | FileSpec | str,
    *,
    part: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_unpinned: bool = False,
    offline: bool | None = None,
    progress: bool = True,
    retries: int = 3,
    verify: bool = False,
    deadline_s: float = DEADLINE_S,
    min_bytes_per_s: float = MIN_BYTES_PER_S,
) -> Path:
    """Fetch (or find in the cache) one verified file and return its cached path.

    Args:
        spec_or_file: a catalog entry name, a :class:`WeightsSpec` or a bare :class:`FileSpec`.
        part: with a spec, the file holding this part (see ``FileSpec.part``); default: the first file.
        cache_dir: cache root instead of ``$MEDZOO_HOME``.
        allow_unpinned: download a file whose sha256 the catalog does not pin, and record its hash.
        offline: no network (default: ``$MEDZOO_OFFLINE``); local sources still work.
        progress: show a tqdm bar (only when stderr is a terminal).
        retries: attempts per http source; each one resumes where the previous one stopped.
        verify: re-hash a cached copy even when its stamp says it is unchanged.
        deadline_s: total seconds for the download, all sources and retries together.
        min_bytes_per_s: abort a source whose average rate over a window falls below this.

    Raises:
        UnpinnedError, OfflineError, IntegrityError, DownloadError: see the class docstrings.
    """
    spec, file = _resolve(spec_or_file, part)
    return _download_one(spec, file, cache_dir=cache_dir, allow_unpinned=allow_unpinned, offline=offline,
                         progress=progress, retries=retries, verify=verify, deadline_s=deadline_s,
                         min_bytes_per_s=min_bytes_per_s)


def download_all(spec_or_name: WeightsSpec | str, **kwargs: Any) -> list[Path]:
    """Fetch every file of an entry (keyword arguments as :func:`download`, minus ``part``); returns the paths."""
    spec, _ = _resolve(spec_or_name, None)
    return [_download_one(spec, f, **kwargs) for f in spec.files]


def _download_one(spec: WeightsSpec | None, file: FileSpec, *, cache_dir: str | os.PathLike | None = None,
                  allow_unpinned: bool = False, offline: bool | None = None, progress: bool = True,
                  retries: int = 3, verify: bool = False, deadline_s: float = DEADLINE_S,
                  min_bytes_per_s: float = MIN_BYTES_PER_S) -> Path:
    dest = cache_path(spec, file, cache_dir)
    label = f"{spec.name} ({file.name})" if spec is not None else file.name
    opts = {"progress": progress, "retries": max(1, retries), "offline": is_offline(offline), "label": label,
            "deadline_s": deadline_s, "min_rate": min_bytes_per_s, "rate_window": RATE_WINDOW_S}
    # A hash recorded by an earlier allow_unpinned fetch pins the file from then on, as the catalog's would.
    if not (file.pinned or file.sha256_prefix or allow_unpinned or file.url in read_pins(cache_dir)):
        raise UnpinnedError(
            f"{label}: the catalog pins no sha256 for {file.url}, so its content cannot be verified. Pass "
            f"allow_unpinned=True (CLI: --allow-unpinned) to download it anyway and record its hash on first fetch.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock")):
        opts["deadline"] = time.monotonic() + deadline_s  # from when this process holds the lock
        sha, size, record = _expected(file, cache_root(cache_dir), label)
        opts.update(size=size, hash_pinned=sha is not None and len(sha) == 64)
        opts["max_bytes"], opts["cap_reason"] = _byte_cap(spec, size)
        got = _cached(dest, sha, size, file.url, verify)
        if got is None:
            got = _fetch(file, dest, sha, size, opts)
        else:
            log.info("%s: cache hit %s", label, dest)
        if record:
            _record_pin(cache_root(cache_dir), file, got, dest.stat().st_size, str(dest))
    return dest


def _resolve(spec_or_file: WeightsSpec | FileSpec | str, part: str | None) -> tuple[WeightsSpec | None, FileSpec]:
    if isinstance(spec_or_file, str):
        spec_or_file = get_entry(spec_or_file)
    if isinstance(spec_or_file, FileSpec):
        return None, spec_or_file
    if not isinstance(spec_or_file, WeightsSpec):
        raise TypeError(f"download() takes an entry name, a WeightsSpec or a FileSpec, got {spec_or_file!r}")
    if part is None:
        return spec_or_file, spec_or_file.files[0]
    for f in spec_or_file.files:
        if f.part == part:
            return spec_or_file, f
    parts = [f.part for f in spec_or_file.files]
    raise KeyError(f"weights {spec_or_file.name!r} have no file for part {part!r}; files hold parts {parts}")


def _expected(file: FileSpec, root: Path, label: str) -> tuple[str | None, int | None, bool]:
    """(sha256, size, record_after) to verify against: the catalog's, else the recorded pin, else none yet."""
    if file.pinned:
        return file.sha256, file.size, False
    pin = read_pins(root).get(file.url)
    if pin is not None:
        if file.size is not None and pin["size"] != file.size:
            raise IntegrityError(f"{label}: pin in {root / 'pins.json'} says {pin['size']} bytes, catalog {file.size}")
        if file.sha256_prefix and not pin["sha256"].startswith(file.sha256_prefix):
            raise IntegrityError(f"{label}: pin in {root / 'pins.json'} is sha256 {pin['sha256']}, which does not "
                                 f"start with the catalog's prefix {file.sha256_prefix}")
        log.warning("%s is unpinned in the catalog; verifying against the sha256 recorded on %s (%s)",
                    label, pin.get("recorded", "?"), root / "pins.json")
        return pin["sha256"], int(pin["size"]), False
    if file.sha256_prefix:
        log.info("%s: checking the sha256 prefix %s and recording the full hash on this first fetch", label,
                 file.sha256_prefix)
        return file.sha256_prefix, file.size, True
    log.warning("%s is unpinned in the catalog: downloading without a hash to check against", label)
    return None, file.size, True


def _byte_cap(spec: WeightsSpec | None, size: int | None) -> tuple[int, str]:
    """The most bytes a file may have, and where that figure comes from."""
    if size is not None:
        return size, "the catalog's size"
    m = _NOTED_SIZE.search(" ".join((spec.notes or "").split())) if spec is not None else None
    if m:
        noted = float(m.group(1)) * {"K": 1e3, "M": 1e6, "G": 1e9}[m.group(2).upper()]
        return int(noted * 1.5), f"1.5 x the {m.group(0)!r} of the entry's notes"
    return UNPINNED_MAX_BYTES, f"the default cap for unpinned files, UNPINNED_MAX_BYTES = {UNPINNED_MAX_BYTES:,}"


def _fingerprint(dest: Path) -> dict[str, int]:
    """What changes whenever the file's bytes may have: a copy that restores the mtime still gets a new ctime/inode."""
    st = dest.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _cached(dest: Path, sha: str | None, size: int | None, url: str, verify: bool = False) -> str | None:
    """The sha256 of a good cached copy, or None (a bad copy, or one fetched for another url unpinned, is removed)."""
    if not dest.is_file():
        return None
    stamp = dest.with_name(dest.name + ".verified")
    fresh = _fingerprint(dest)
    try:
        old = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    recent = time.time() - float(old.get("verified_at", 0)) < REVERIFY_AFTER_S
    same = all(old.get(k) == v for k, v in fresh.items()) and recent and not verify
    got = old.get("sha256") if same else None
    if size is not None and fresh["size"] != size:
        reason = f"its size is {fresh['size']} bytes, expected {size}"
    elif sha is None and old.get("url") not in (None, url):
        reason = f"it was fetched from {old.get('url')!r}, and the unpinned entry now names {url!r}"
    else:
        got = got or sha256_file(dest)
        reason = "" if _matches(got, sha) else f"its sha256 is {got}, expected {sha}"
    if reason:
        log.warning("cached %s failed verification (%s); removing it", dest, reason)
        dest.unlink()
        stamp.unlink(missing_ok=True)
        return None
    if not same:
        _write_stamp(dest, got, old.get("url") or url)
    return got


def _write_stamp(dest: Path, sha: str, url: str) -> None:
    """Remember that ``dest`` (as it is now: size, times, inode) was verified to have ``sha``, fetched for ``url``."""
    stamp = {"sha256": sha, **_fingerprint(dest), "url": url, "verified_at": time.time()}
    atomic_write_bytes(dest.with_name(dest.name + ".verified"), json.dumps(stamp, allow_nan=False).encode("utf-8"))


def _fetch(file: FileSpec, dest: Path, sha: str | None, size: int | None, opts: dict[str, Any]) -> str:
    """Try each source in order; on success the verified file is at ``dest`` and its sha256 is returned."""
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    integrity = False
    for src in file.sources:
        if opts["offline"] and not _is_local(src):
            errors.append(f"{src}: skipped, {OFFLINE_ENV}=1 forbids network downloads")
            continue
        try:
            got = _try_source(src, part, sha, size, opts)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise  # every other source would fill the same disk; the error names the deleted .part
            errors.append(f"{src}: {exc}")
        except IntegrityError as exc:
            integrity = True
            errors.append(str(exc))
            part.unlink(missing_ok=True)  # never keep bytes that failed a check
            _meta_path(part).unlink(missing_ok=True)
        except (_Transient, DownloadError, http.client.HTTPException) as exc:
            errors.append(f"{src}: {exc}")
        else:
            os.replace(part, dest)
            _meta_path(part).unlink(missing_ok=True)
            _write_stamp(dest, got, file.url)
            log.info("%s: verified sha256 %s, saved to %s", opts["label"], got, dest)
            return got
        log.warning("%s: %s", opts["label"], errors[-1])
    raise _failure(opts, dest, sha, errors, integrity)


def _failure(opts: dict[str, Any], dest: Path, sha: str | None, errors: list[str], integrity: bool) -> DownloadError:
    tried = "\n".join(f"  - {e}" for e in errors)
    expect = f"expected sha256 {sha}" if sha else "unpinned (no sha256 to check)"
    if opts["offline"] and all(f"{OFFLINE_ENV}=1" in e for e in errors):
        return OfflineError(
            f"{opts['label']}: not in the cache at {dest}, and {OFFLINE_ENV}=1 allows no download:\n{tried}\n"
            f"Unset {OFFLINE_ENV} (or pass offline=False) to download it, or copy the file to {dest}.")
    cls = IntegrityError if integrity else DownloadError
    return cls(f"could not get a verified copy of {opts['label']} ({expect}); tried:\n{tried}\n"
               f"To work without the network, copy the file to {dest} and set {OFFLINE_ENV}=1.")


def _try_source(src: str, part: Path, sha: str | None, size: int | None, opts: dict[str, Any]) -> str:
    """Transfer from one source into ``part`` and verify; a resumed copy that fails is fetched again in full."""
    if _is_local(src):
        _copy_local(src, part, size, opts.get("max_bytes"))
        return _verify(part, sha, size, src)
    resumed = part.is_file() and part.stat().st_size > 0
    _http_download(src, part, size, opts)
    try:
        return _verify(part, sha, size, src)
    except IntegrityError:
        if not resumed:
            raise
        log.warning("%s: the resumed copy failed verification; downloading it again from the start", src)
        _http_download(src, part, size, opts)
        return _verify(part, sha, size, src)


def _verify(part: Path, sha: str | None, size: int | None, src: str) -> str:
    """Check size and full sha256 of ``part``; on a mismatch remove it and raise :class:`IntegrityError`."""
    n = part.stat().st_size
    got = sha256_file(part)
    if (size is not None and n != size) or not _matches(got, sha):
        part.unlink()
        _meta_path(part).unlink(missing_ok=True)
        want = (f"sha256 {sha}" if len(sha) == 64 else f"a sha256 starting {sha}") if sha else "no pinned sha256"
        raise IntegrityError(f"{src}: content rejected and removed: expected {want}, {size} bytes; "
                             f"got sha256 {got}, {n} bytes")
    return got


def _matches(got: str, want: str | None) -> bool:
    """``got`` (a full sha256) satisfies ``want``: nothing to check, the same digest, or a prefix of it."""
    return want is None or got == want or (len(want) < 64 and got.startswith(want))
