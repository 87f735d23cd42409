"""Verified downloads against a local HTTP server: integrity, resume, offline, locking, unpinned, sources."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from medzoo.zoo.download import (
    DownloadError,
    IntegrityError,
    OfflineError,
    UnpinnedError,
    cache_path,
    download,
    read_pins,
)
from medzoo.zoo.spec import FileSpec, WeightsSpec

REPO = Path(__file__).resolve().parents[2]
DATA = random.Random(0).randbytes(64 * 1024 + 123)
SHA = hashlib.sha256(DATA).hexdigest()


def pinned(url: str, *mirrors: str, data: bytes = DATA) -> FileSpec:
    return FileSpec(url=url, mirrors=mirrors, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                    format="safetensors")


def tampered(data: bytes = DATA) -> bytes:
    return data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(path.name + ".part*"))


def test_download_verifies_and_cache_hit_does_not_refetch(http_server, medzoo_home, monkeypatch):
    import medzoo.zoo.download as dl

    spec = pinned(http_server.add("w.safetensors", DATA))
    hashed = []
    real = dl.sha256_file
    monkeypatch.setattr(dl, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    path = download(spec, progress=False)
    assert path.read_bytes() == DATA
    assert path == cache_path(None, spec)
    assert medzoo_home in path.parents
    assert leftovers(path) == []
    assert hashed == ["w.safetensors.part"]
    assert download(spec, progress=False) == path  # verified stamp matches: no re-hash, no request
    assert http_server.count("w.safetensors") == 1
    assert hashed == ["w.safetensors.part"]
    os.utime(path, ns=(1, 1))  # the file changed on disk (mtime): the next hit re-hashes it
    assert download(spec, progress=False) == path
    assert hashed[-1] == "w.safetensors"
    assert http_server.count("w.safetensors") == 1


def test_tampered_server_file_rejected_and_removed(http_server, medzoo_home):
    spec = pinned(http_server.add("w.bin", tampered()))
    with pytest.raises(IntegrityError) as err:
        download(spec, progress=False)
    msg = str(err.value)
    assert spec.url in msg
    assert SHA in msg
    assert hashlib.sha256(tampered()).hexdigest() in msg
    dest = cache_path(None, spec)
    assert not dest.exists()
    assert leftovers(dest) == []


def test_tampered_cache_file_removed_then_refetched(http_server, medzoo_home, monkeypatch):
    spec = pinned(http_server.add("w.bin", DATA))
    path = download(spec, progress=False)
    path.write_bytes(tampered())  # same size, different content
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")
    with pytest.raises(OfflineError, match="MEDZOO_OFFLINE"):
        download(spec, progress=False)
    assert not path.exists()
    monkeypatch.delenv("MEDZOO_OFFLINE")
    assert download(spec, progress=False).read_bytes() == DATA
    assert http_server.count("w.bin") == 2


def test_dropped_connection_leaves_no_corrupt_cache_and_retry_resumes(http_server, medzoo_home):
    spec = pinned(http_server.add("w.bin", DATA))
    http_server.switches.drop_after = 20_000
    with pytest.raises(DownloadError, match="connection closed after 20000"):
        download(spec, progress=False, retries=1)
    dest = cache_path(None, spec)
    assert not dest.exists()
    part = dest.with_name(dest.name + ".part")
    assert part.read_bytes() == DATA[:20_000]
    assert download(spec, progress=False).read_bytes() == DATA
    first, second = http_server.requests
    assert "Range" not in first.headers
    assert first.body_bytes == 20_000
    assert second.headers["Range"] == "bytes=20000-"
    assert second.status == 206
    assert second.body_bytes == len(DATA) - 20_000
    assert leftovers(dest) == []


def test_drop_is_resumed_within_one_call(http_server, medzoo_home):
    spec = pinned(http_server.add("w.bin", DATA))
    http_server.switches.drop_after, http_server.switches.drop_times = 5_000, 2
    assert download(spec, progress=False, retries=3).read_bytes() == DATA
    ranges = [r.headers.get("Range") for r in http_server.requests]
    assert ranges == [None, "bytes=5000-", "bytes=10000-"]
    assert sum(r.body_bytes for r in http_server.requests) == len(DATA)


def test_server_ignoring_range_restarts_from_zero(http_server, medzoo_home):
    spec = pinned(http_server.add("w.bin", DATA))
    http_server.switches.drop_after, http_server.switches.ignore_range = 7_000, True
    assert download(spec, progress=False, retries=2).read_bytes() == DATA
    first, second = http_server.requests
    assert second.headers["Range"] == "bytes=7000-"
    assert second.status == 200
    assert second.body_bytes == len(DATA)


def test_offline_uses_cache_or_fails_naming_the_variable(http_server, medzoo_home, monkeypatch):
    spec = pinned(http_server.add("w.bin", DATA))
    other = pinned(http_server.add("other.bin", DATA[::-1]), data=DATA[::-1])
    path = download(spec, progress=False)
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")
    assert download(spec, progress=False) == path
    with pytest.raises(OfflineError) as err:
        download(other, progress=False)
    assert "MEDZOO_OFFLINE" in str(err.value)
    assert str(cache_path(None, other)) in str(err.value)
    assert [r.path for r in http_server.requests] == ["/w.bin"]
    assert download(other, progress=False, offline=False).read_bytes() == DATA[::-1]


def test_two_processes_end_with_one_verified_file_and_one_transfer(http_server, medzoo_home):
    spec = pinned(http_server.add("w.bin", DATA))
    http_server.switches.chunk_delay = 0.02  # ~0.35 s transfer, so the second process arrives during the first
    code = ("import sys; from medzoo.zoo.download import download; from medzoo.zoo.spec import FileSpec; "
            f"print(download(FileSpec(url={spec.url!r}, sha256={spec.sha256!r}, size={spec.size}, "
            "format='safetensors'), progress=False))")
    env = {**os.environ, "MEDZOO_HOME": str(medzoo_home), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert paths == {str(cache_path(None, spec))}
    assert Path(paths.pop()).read_bytes() == DATA
    assert http_server.count("w.bin") == 1
    assert http_server.requests[0].body_bytes == len(DATA)


def test_unpinned_refused_without_flag_and_recorded_with_it(http_server, medzoo_home, caplog):
    url = http_server.add("u.pth", DATA)
    spec = FileSpec(url=url, sha256=None, format="medicalnet-pth")
    with pytest.raises(UnpinnedError, match="allow_unpinned"):
        download(spec, progress=False)
    assert http_server.requests == []
    with caplog.at_level(logging.WARNING, logger="medzoo.zoo.download"):
        path = download(spec, progress=False, allow_unpinned=True)
    assert path.read_bytes() == DATA
    assert any("unpinned" in r.getMessage() for r in caplog.records)
    pin = read_pins()[url]
    assert (pin["sha256"], pin["size"]) == (SHA, len(DATA))
    assert json.loads((medzoo_home / "pins.json").read_text())[url]["sha256"] == SHA
    # The recorded pin now verifies later fetches: a changed upstream file is rejected.
    path.unlink()
    http_server.add("u.pth", tampered())
    with pytest.raises(IntegrityError, match=SHA):
        download(spec, progress=False, allow_unpinned=True)
    assert not path.exists()


def test_file_url_and_plain_path_sources(tmp_path, medzoo_home, monkeypatch):
    src = tmp_path / "local.bin"
    src.write_bytes(DATA)
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")  # local sources need no network, so offline mode allows them
    for url in (src.as_uri(), str(src)):
        spec = FileSpec(url=url, sha256=SHA, size=len(DATA), format="safetensors", filename=f"{len(url)}.bin")
        path = download(spec, progress=False)
        assert path.read_bytes() == DATA
        assert path != src
    src.write_bytes(tampered())
    spec = FileSpec(url=str(src), sha256=SHA, size=len(DATA), format="safetensors", filename="t.bin")
    with pytest.raises(IntegrityError, match=str(src)):
        download(spec, progress=False)
    assert not cache_path(None, spec).exists()


def test_mirrors_are_tried_in_order(http_server, medzoo_home, tmp_path):
    http_server.add("bad.bin", tampered())
    http_server.add("good.bin", DATA)
    spec = pinned(http_server.url("missing.bin"), http_server.url("bad.bin"), http_server.url("good.bin"))
    assert download(spec, progress=False).read_bytes() == DATA
    assert [r.path for r in http_server.requests] == ["/missing.bin", "/bad.bin", "/good.bin"]
    all_bad = pinned(http_server.url("missing.bin"), http_server.url("bad.bin"))
    with pytest.raises(IntegrityError) as err:
        download(all_bad, progress=False, cache_dir=tmp_path / "other")
    assert "HTTP 404" in str(err.value)
    assert http_server.url("bad.bin") in str(err.value)
    assert str(err.value).index("missing.bin") < str(err.value).index("bad.bin")


def test_size_lies_are_rejected(http_server, medzoo_home, tmp_path):
    spec = pinned(http_server.add("w.bin", DATA))
    http_server.switches.declared_length = len(DATA) + 10
    with pytest.raises(IntegrityError, match=f"declares {len(DATA) + 10} bytes"):
        download(spec, progress=False)
    http_server.switches.declared_length, http_server.switches.omit_length = None, True
    short = FileSpec(url=spec.url, sha256=hashlib.sha256(DATA[:-10]).hexdigest(), size=len(DATA) - 10,
                     format="safetensors", filename="short.bin")
    with pytest.raises(IntegrityError, match=f"more than the {len(DATA) - 10} bytes"):
        download(short, progress=False)
    assert not cache_path(None, short).exists()
    assert leftovers(cache_path(None, short)) == []
    # Without Content-Length a correct body is still accepted (its size and hash are checked after).
    assert download(spec, progress=False).read_bytes() == DATA


def _entry(url: str, name: str = "tiny.test") -> dict:
    return {"name": name, "version": "1.0", "architecture": {"encoder": "resnet10", "widths": [8, 16, 32, 64]},
            "parts": ["encoder"], "files": [{"url": url, "sha256": SHA, "size": len(DATA), "format": "safetensors",
                                             "part": "encoder"}],
            "license": "MIT", "source": "https://example.org", "citation": "test"}


def test_download_by_catalog_name_and_cli(tmp_path, medzoo_home, monkeypatch, capsys):
    import yaml

    from medzoo.cli import zoo_cmd

    src = tmp_path / "w.safetensors"
    src.write_bytes(DATA)
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"schema": 1, "entries": [_entry(src.as_uri())]}))
    monkeypatch.setenv("MEDZOO_CATALOG", str(cat))
    path = download("tiny.test", progress=False)
    assert path == medzoo_home / "weights" / "tiny.test" / "1.0" / "w.safetensors"
    assert path.read_bytes() == DATA
    parser = argparse.ArgumentParser()
    zoo_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["download", "tiny.test", "--cache-dir", str(tmp_path / "c")])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c" / "weights" / "tiny.test" / "1.0" / "w.safetensors")


def test_cli_download_refuses_unpinned(medzoo_home, tmp_path):
    from medzoo.cli import zoo_cmd

    parser = argparse.ArgumentParser()
    zoo_cmd.add_parser(parser.add_subparsers())
    unpinned = REPO / "weights" / "catalog-unpinned.yaml"  # every entry of the shipped catalog is pinned
    args = parser.parse_args(["download", "densenet121-res224-nih", "--catalog", str(unpinned)])
    with pytest.raises(UnpinnedError, match="--allow-unpinned"):
        args.func(args)


def test_spec_download_picks_part(tmp_path, medzoo_home):
    src = tmp_path / "w.safetensors"
    src.write_bytes(DATA)
    spec = WeightsSpec.from_dict(_entry(src.as_uri()))
    assert download(spec, part="encoder", progress=False).read_bytes() == DATA
    with pytest.raises(KeyError, match="no file for part 'heads'"):
        download(spec, part="heads", progress=False)
