"""Downloads against a hostile server on 127.0.0.1: changed files on resume, missing validators, redirects out of
http(s), trickling bytes, unbounded bodies, a real full disk, SIGKILL, and cache bit rot."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import medzoo.zoo.download as dl
from medzoo.cli.main import main
from medzoo.zoo.download import DownloadError, cache_path, download, read_pins
from medzoo.zoo.spec import FileSpec, WeightsSpec
from tests.helpers import serve
from tests.robustness.attack_kit import REPO, small_fs
from tests.robustness.tally import case, note

A = random.Random(1).randbytes(96 * 1024)
B = random.Random(2).randbytes(96 * 1024)
HALF = 40 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpinned(url: str, name: str = "f.bin") -> FileSpec:
    return FileSpec(url=url, sha256=None, format="safetensors", filename=name)


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.glob(dest.name + ".part*"))


# ------------------------------------------------------------------------------------------------------- D4
def test_unpinned_resume_without_validator_restarts_instead_of_splicing(http_server, tmp_path):
    note("downloads", "unpinned file changed between a dropped attempt and the retry",
         "fixed: the retry resumed with Range and pinned A[:half] + B[half:]; now no validator = restart at byte 0")
    with case("downloads", "unpinned file changed between a dropped attempt and the retry"):
        url = http_server.add("f.bin", A)
        sw = http_server.switches
        sw.validators, sw.drop_after, sw.replace_after = False, HALF, (1, B)
        path = download(unpinned(url), allow_unpinned=True, progress=False, retries=2, cache_dir=tmp_path)
        assert path.read_bytes() == B
        assert read_pins(tmp_path)[url]["sha256"] == sha(B)
        first, second = http_server.requests
        assert first.body_bytes == HALF
        assert "Range" not in second.headers
        assert second.body_bytes == len(B)


def test_server_ignoring_if_range_with_a_new_etag_restarts(http_server, tmp_path):
    """The file changes after the first attempt; the server ignores If-Range and answers the Range request with 206
    from the new version, under the new version's ETag."""
    with case("downloads", "unpinned file changed, server ignores If-Range (206 with a new ETag)"):
        url = http_server.add("f.bin", A)
        http_server.switches.drop_after, http_server.switches.replace_after = HALF, (1, B)
        path = download(unpinned(url), allow_unpinned=True, progress=False, retries=3, cache_dir=tmp_path)
        assert path.read_bytes() == B
        first, resumed, fresh = http_server.requests
        assert resumed.headers.get("Range") == f"bytes={HALF}-"
        assert resumed.status == 206  # answered from version B: discarded, not spliced
        assert "Range" not in fresh.headers
        assert fresh.body_bytes == len(B)


def test_sigkill_mid_download_then_changed_file_gives_the_new_file(http_server, tmp_path):
    with case("downloads", "SIGKILL mid-download of an unpinned file, file changed, re-run"):
        url = http_server.add("f.bin", A)
        sw = http_server.switches
        sw.validators, sw.chunk_delay = False, 0.05
        code = ("from medzoo.zoo.download import download; from medzoo.zoo.spec import FileSpec; "
                f"download(FileSpec(url={url!r}, sha256=None, format='safetensors', filename='f.bin'), "
                f"allow_unpinned=True, progress=False, cache_dir={str(tmp_path)!r})")
        child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
        part = cache_path(None, unpinned(url), tmp_path).with_name("f.bin.part")
        deadline = time.monotonic() + 60
        while not (part.is_file() and part.stat().st_size >= 8192) and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert part.stat().st_size >= 8192  # the kill left a partial copy of A
        sw.chunk_delay = 0.0
        http_server.add("f.bin", B)
        path = download(unpinned(url), allow_unpinned=True, progress=False, cache_dir=tmp_path)
        assert path.read_bytes() == B
        assert "Range" not in http_server.requests[-1].headers


def test_pinned_file_still_resumes_without_validator(http_server, tmp_path):
    """The full sha256 checks a resumed pinned file, so resuming stays allowed (and saves the bytes kept)."""
    with case("downloads", "pinned file, no validator, dropped connection: resumed (sha256 checks it)"):
        url = http_server.add("p.bin", A)
        http_server.switches.validators, http_server.switches.drop_after = False, HALF
        spec = FileSpec(url=url, sha256=sha(A), size=len(A), format="safetensors")
        assert download(spec, progress=False, cache_dir=tmp_path).read_bytes() == A
        assert http_server.requests[1].headers.get("Range") == f"bytes={HALF}-"


# ------------------------------------------------------------------------------------------------------ D11
def test_trickling_server_is_cut_off_by_the_minimum_rate(http_server, tmp_path, monkeypatch):
    note("downloads", "slowloris server: 1 byte every 50 ms",
         "fixed: only a per-read timeout existed (1 byte every 29 s never timed out); now a minimum rate over a "
         "window and a total deadline")
    with case("downloads", "slowloris server: 1 byte every 50 ms"):
        monkeypatch.setattr(dl, "RATE_WINDOW_S", 0.5)
        url = http_server.add("slow.bin", A)
        http_server.switches.trickle = 0.05
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match="too slow"):
            download(FileSpec(url=url, sha256=sha(A), size=len(A), format="safetensors"), progress=False,
                     cache_dir=tmp_path, min_bytes_per_s=1000)
        assert time.monotonic() - t0 < 10


def test_total_deadline_ends_a_steady_but_endless_download(http_server, tmp_path):
    with case("downloads", "total deadline: a steady transfer longer than deadline_s"):
        url = http_server.add("long.bin", A)
        http_server.switches.chunk_delay = 0.1  # 24 chunks: ~2.4 s in all
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match="1 s deadline"):
            download(FileSpec(url=url, sha256=sha(A), size=len(A), format="safetensors"), progress=False,
                     cache_dir=tmp_path, deadline_s=1.0, min_bytes_per_s=1)
        assert time.monotonic() - t0 < 2.0


def _entry(name: str, file: dict) -> dict:
    """A catalog entry (plain data) of one encoder weight file."""
    return {"name": name, "version": "1", "architecture": {"encoder": "resnet10"}, "parts": ["encoder"],
            "files": [{"format": "safetensors", **file}], "license": "MIT", "source": "https://example.org",
            "citation": "none"}


def _use_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: dict) -> None:
    """Make ``entry`` the only catalog entry the CLI sees (``MEDZOO_CATALOG``)."""
    cat = tmp_path / "cat.yaml"
    cat.write_text(yaml.safe_dump({"schema": 1, "entries": [entry]}))
    monkeypatch.setenv("MEDZOO_CATALOG", str(cat))


def _catalog_entry(url: str, notes: str | None) -> WeightsSpec:
    d = _entry("big.unpinned", {"url": url, "sha256": None, "filename": "w.bin"})
    return WeightsSpec.from_dict({**d, "notes": notes} if notes else d)


def test_unpinned_body_without_length_is_capped_by_the_catalog_notes(http_server, tmp_path):
    note("downloads", "unpinned, no Content-Length, 1 MB body; notes say about 0.1 MB",
         "fixed: accepted and pinned whatever came; now capped at 1.5 x the size the notes give, or 1 GiB")
    with case("downloads", "unpinned, no Content-Length, 1 MB body; notes say about 0.1 MB"):
        url = http_server.add("w.bin", os.urandom(1 << 20))
        http_server.switches.omit_length = True
        spec = _catalog_entry(url, "Unpinned. Expected size about 0.1 MB.")
        with pytest.raises(DownloadError, match="cap for this unpinned file"):
            download(spec, allow_unpinned=True, progress=False, cache_dir=tmp_path)
        dest = cache_path(spec, spec.files[0], tmp_path)
        assert not dest.exists()
        assert leftovers(dest) == []
        assert read_pins(tmp_path) == {}


def test_unpinned_declared_length_over_the_default_cap_is_refused_before_the_body(http_server, tmp_path,
                                                                                 monkeypatch):
    with case("downloads", "unpinned, Content-Length over the default cap"):
        monkeypatch.setattr(dl, "UNPINNED_MAX_BYTES", 64 * 1024)
        url = http_server.add("w.bin", A)
        with pytest.raises(DownloadError, match=f"the server declares {len(A):,} bytes, over the 65,536-byte cap"):
            download(unpinned(url), allow_unpinned=True, progress=False, cache_dir=tmp_path)
        assert leftovers(cache_path(None, unpinned(url), tmp_path)) == []


def test_real_full_disk_deletes_the_part_and_names_it(http_server, tmp_path):
    note("faults", "real full disk (64 KB tmpfs) during a download",
         "fixed: the .part was kept, so the disk stayed full, and the error named no file; now deleted and named")
    with case("faults", "real full disk (64 KB tmpfs) during a download"):
        data = os.urandom(200 * 1024)
        url = http_server.add("big.bin", data)
        with small_fs(tmp_path / "disk", "64k") as disk:
            spec = FileSpec(url=url, sha256=sha(data), size=len(data), format="safetensors")
            with pytest.raises(OSError) as err:
                download(spec, progress=False, cache_dir=disk)
            assert err.value.errno == errno.ENOSPC
            part = cache_path(None, spec, disk).with_name("big.bin.part")
            assert err.value.filename == str(part)
            assert not part.exists()
            st = os.statvfs(disk)
            assert st.f_bfree * st.f_frsize > 32 * 1024  # the space is free again


def test_cli_full_disk_message_names_the_part(http_server, tmp_path, capsys, monkeypatch):
    with case("faults", "real full disk: `medzoo download` prints one line naming the .part"):
        data = os.urandom(200 * 1024)
        url = http_server.add("big.bin", data)
        _use_catalog(tmp_path, monkeypatch, _entry("big.one", {"url": url, "sha256": sha(data), "size": len(data)}))
        with small_fs(tmp_path / "disk", "64k") as disk:
            assert main(["-q", "download", "big.one", "--cache-dir", str(disk)]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1
            assert "No space left on device" in err[0]
            assert str(disk / "weights" / "big.one" / "1" / "big.bin.part") in err[0]


# ------------------------------------------------------------------------------------------------ redirects
def test_redirect_to_ftp_or_data_is_refused_and_never_connects(http_server, tmp_path):
    note("downloads", "302 to ftp:// (a listener on 127.0.0.1) and to data:",
         "fixed: urllib followed the ftp redirect (the listener got a connection); now only http/https")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    try:
        # urllib itself refuses data: (held before); ftp: it followed.
        for target, refusal in ((f"ftp://127.0.0.1:{listener.getsockname()[1]}/w.bin", "refused: only http and https"),
                                ("data:application/octet-stream,AAAA", "is not allowed")):
            with case("downloads", "302 to ftp:// (a listener on 127.0.0.1) and to data:"):
                http_server.switches.redirect = target
                url = http_server.url("w.bin")
                with pytest.raises(DownloadError, match=refusal):
                    download(FileSpec(url=url, sha256=sha(A), size=len(A), format="safetensors"), progress=False,
                             cache_dir=tmp_path)
                with pytest.raises(socket.timeout):
                    listener.accept()
    finally:
        listener.close()


@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    """An https server on 127.0.0.1 with a self-signed certificate that this process trusts (SSL_CERT_FILE)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                           str(cert)], capture_output=True, text=True) if _has_openssl() else None
    if made is None or made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    with serve(tmp_path / "tls", tls=ctx) as server:
        yield server


def _has_openssl() -> bool:
    return subprocess.run(["sh", "-c", "command -v openssl"], capture_output=True).returncode == 0


def test_https_to_http_redirect_is_refused(tls_server, http_server, tmp_path):
    note("downloads", "https -> http redirect", "fixed: followed (a downgrade); now refused")
    https = lambda name: f"https://127.0.0.1:{tls_server.port}/{name}"  # noqa: E731
    with case("downloads", "https -> http redirect"):
        tls_server.add("w.bin", A)
        spec = FileSpec(url=https("w.bin"), sha256=sha(A), size=len(A), format="safetensors")
        assert download(spec, progress=False, cache_dir=tmp_path / "direct").read_bytes() == A  # TLS works
        http_server.add("w.bin", A)
        tls_server.switches.redirect = http_server.url("w.bin")
        with pytest.raises(DownloadError, match="https must not downgrade to http"):
            download(spec, progress=False, cache_dir=tmp_path / "down")
        assert http_server.requests == []


# ----------------------------------------------------------------------------------------------------- D12
def test_flipped_bit_with_mtime_restored_is_caught(http_server, tmp_path):
    note("downloads", "cache bit flip with the mtime restored",
         "fixed: the stamp matched size + mtime and the bad bytes were returned; now ctime and inode are part "
         "of the stamp, stamps expire after 30 days, and --verify re-hashes on demand")
    with case("downloads", "cache bit flip with the mtime restored"):
        url = http_server.add("w.bin", A)
        spec = FileSpec(url=url, sha256=sha(A), size=len(A), format="safetensors")
        path = download(spec, progress=False, cache_dir=tmp_path)
        st = path.stat()
        raw = bytearray(path.read_bytes())
        raw[5000] ^= 0x01
        path.write_bytes(bytes(raw))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert download(spec, progress=False, cache_dir=tmp_path).read_bytes() == A
        assert http_server.count("w.bin") == 2


def test_rot_behind_a_fresh_stamp_is_caught_by_verify_and_by_age(http_server, tmp_path, capsys, monkeypatch):
    """Media bit rot changes no metadata: a stamp written after the rot matches. ``--verify`` and the 30-day expiry
    re-hash anyway."""
    with case("downloads", "bit rot behind a matching stamp: --verify and stamp expiry"):
        url = http_server.add("w.bin", A)
        spec = FileSpec(url=url, sha256=sha(A), size=len(A), format="safetensors")
        path = download(spec, progress=False, cache_dir=tmp_path)
        stamp = path.with_name("w.bin.verified")
        rotted = bytearray(A)
        rotted[100] ^= 0x80
        path.write_bytes(bytes(rotted))
        dl._write_stamp(path, sha(A), url)  # as if the stamp post-dated the rot
        assert download(spec, progress=False, cache_dir=tmp_path).read_bytes() == bytes(rotted)  # the limit
        assert download(spec, progress=False, cache_dir=tmp_path, verify=True).read_bytes() == A
        path.write_bytes(bytes(rotted))
        dl._write_stamp(path, sha(A), url)
        old = json.loads(stamp.read_text())
        stamp.write_text(json.dumps({**old, "verified_at": time.time() - 31 * 86400}))
        assert download(spec, progress=False, cache_dir=tmp_path).read_bytes() == A
        assert http_server.count("w.bin") == 3


def test_cli_download_verify_flag(http_server, tmp_path, monkeypatch, capsys):
    with case("downloads", "bit rot behind a matching stamp: --verify and stamp expiry"):
        url = http_server.add("w.bin", A)
        _use_catalog(tmp_path, monkeypatch, _entry("w.one", {"url": url, "sha256": sha(A), "size": len(A)}))
        assert main(["-q", "download", "w.one", "--cache-dir", str(tmp_path / "c")]) == 0
        path = Path(capsys.readouterr().out.strip())
        rotted = bytearray(A)
        rotted[7] ^= 1
        path.write_bytes(bytes(rotted))
        dl._write_stamp(path, sha(A), url)
        assert main(["-q", "download", "w.one", "--cache-dir", str(tmp_path / "c"), "--verify"]) == 0
        assert path.read_bytes() == A


def test_unpinned_entry_whose_url_changed_is_fetched_again(http_server, tmp_path):
    with case("downloads", "unpinned entry re-published with another url, same name and version"):
        url_a, url_b = http_server.add("a.bin", A), http_server.add("b.bin", B)
        first = _catalog_entry(url_a, None)
        assert download(first, allow_unpinned=True, progress=False, cache_dir=tmp_path).read_bytes() == A
        second = _catalog_entry(url_b, None)
        assert download(second, allow_unpinned=True, progress=False, cache_dir=tmp_path).read_bytes() == B
        assert read_pins(tmp_path)[url_b]["sha256"] == sha(B)
