"""Prefix-pinned files (torchvision's ``<name>-<8 hex>.pth``): checked against the prefix, full hash recorded once."""

from __future__ import annotations

import hashlib
import random

import pytest

from medzoo.zoo.download import IntegrityError, UnpinnedError, cache_path, download, read_pins
from medzoo.zoo.spec import FileSpec, SpecError, WeightsSpec

DATA = random.Random(1).randbytes(20_000)
SHA = hashlib.sha256(DATA).hexdigest()


def prefixed(url: str, prefix: str = SHA[:8], size: int | None = None) -> FileSpec:
    return FileSpec(url=url, sha256=None, sha256_prefix=prefix, size=size, format="torchvision-resnet")


def test_prefix_pinned_file_downloads_without_allow_unpinned_and_records_the_full_hash(http_server, medzoo_home):
    spec = prefixed(http_server.add(f"resnet18-{SHA[:8]}.pth", DATA))
    path = download(spec, progress=False)
    assert path.read_bytes() == DATA
    pin = read_pins()[spec.url]
    assert (pin["sha256"], pin["size"]) == (SHA, len(DATA))


def test_later_fetches_verify_the_recorded_full_hash(http_server, medzoo_home):
    url = http_server.add("w.pth", DATA)
    spec = prefixed(url)
    path = download(spec, progress=False)
    path.unlink()
    http_server.add("w.pth", DATA[:-1] + bytes([DATA[-1] ^ 1]))  # the server's file changed, same length
    with pytest.raises(IntegrityError, match=f"expected sha256 {SHA}"):  # the full recorded hash, not the prefix
        download(spec, progress=False)


def test_content_not_matching_the_prefix_is_rejected_and_nothing_is_kept(http_server, medzoo_home):
    spec = prefixed(http_server.add("w.pth", DATA), prefix="0" * 8 if not SHA.startswith("0" * 8) else "1" * 8)
    with pytest.raises(IntegrityError, match="a sha256 starting"):
        download(spec, progress=False)
    assert not cache_path(None, spec).exists()
    assert read_pins() == {}


def test_a_recorded_pin_that_contradicts_the_prefix_is_an_error(http_server, medzoo_home):
    import json

    spec = prefixed(http_server.add("w.pth", DATA))
    medzoo_home.mkdir(parents=True, exist_ok=True)
    (medzoo_home / "pins.json").write_text(json.dumps({spec.url: {"sha256": "f" * 64, "size": len(DATA)}}))
    with pytest.raises(IntegrityError, match="does not start with the catalog's prefix"):
        download(spec, progress=False)


def test_no_hash_at_all_still_needs_allow_unpinned(http_server, medzoo_home):
    spec = FileSpec(url=http_server.add("w.pth", DATA), sha256=None, format="torchvision-resnet")
    with pytest.raises(UnpinnedError):
        download(spec, progress=False)


def test_full_hash_and_prefix_must_agree():
    base = {"name": "x.y", "version": "1", "architecture": {"encoder": "resnet18"}, "parts": ["encoder"],
            "license": "MIT", "source": "s", "citation": "c"}
    good = {"url": "https://example.org/a-abcdef12.pth", "sha256": "abcdef12" + "0" * 56, "size": 3,
            "sha256_prefix": "abcdef12", "format": "torchvision-resnet"}
    assert WeightsSpec.from_dict({**base, "files": [good]}).files[0].sha256_prefix == "abcdef12"
    with pytest.raises(SpecError, match="is not the start of sha256"):
        WeightsSpec.from_dict({**base, "files": [{**good, "sha256_prefix": "abcdef13"}]})
    with pytest.raises(SpecError, match="8 to 63 lowercase hex"):
        WeightsSpec.from_dict({**base, "files": [{**good, "sha256": None, "sha256_prefix": "abc"}]})
