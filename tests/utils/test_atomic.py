"""atomic_write: the old file or the new one, never half of one, and a full disk names the file asked for."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest

from medzoo.utils import atomic


class _FullDisk(io.BytesIO):
    def write(self, data: bytes) -> int:  # a real full disk: write() fails and its error carries no file name
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_destination_and_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dest = tmp_path / "result.json"
    dest.write_text("old")
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            real_open(path, mode).close()  # the temp file exists, as it would on a real disk
            return _FullDisk()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", full_disk_open, raising=False)
    with pytest.raises(OSError) as caught:
        atomic.atomic_write(dest, '{"new": 1}')
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(dest)
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_write_replaces_the_file_whole(tmp_path: Path):
    dest = tmp_path / "a.txt"
    dest.write_text("old")
    atomic.atomic_write(dest, b"new bytes")
    assert dest.read_bytes() == b"new bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
