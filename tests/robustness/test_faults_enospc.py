"""Faults: a full disk while writing, simulated. The writer is patched so that every file write fails with
``OSError(ENOSPC)`` once a byte budget is spent (after writing what fits, as a real full disk does).

Each writer (an export folder, ``prepare``, a download, ``write_nifti``, a checkpoint save) raises the OSError and
leaves nothing half-written that looks complete: no new export folder, no cache ``index.json``, no file at the
download's cache path, no temp file next to the checkpoint; re-running then completes. A real full disk (a small
tmpfs) is in ``test_full_disk.py``.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medzoo.data import open_dataset
from medzoo.data.prepared import PreparedDataset, prepare
from medzoo.data.transforms import cxr_preset
from medzoo.train.checkpoint import save_checkpoint
from medzoo.zoo.checkpoint import load_checkpoint
from medzoo.zoo.download import DownloadError, cache_path, download
from medzoo.zoo.export import read_export_dir
from medzoo.zoo.spec import FileSpec
from tests.robustness.faults_kit import CATEGORY, DATA
from tests.robustness.faults_kit import ckpt_state as _ckpt_state
from tests.robustness.faults_kit import small_export as _export
from tests.robustness.faults_kit import snapshot as _snapshot
from tests.robustness.tally import case


class _Budget:
    def __init__(self, n: int) -> None:
        self.left = n


class _LimitedFile:
    """A file object whose writes fail with ENOSPC once the shared byte budget is spent."""

    def __init__(self, f, budget: _Budget) -> None:
        self._f, self._budget = f, budget

    def write(self, data):
        n = memoryview(data).nbytes if not isinstance(data, str) else len(data.encode())
        if n > self._budget.left:
            fit = self._budget.left
            if fit > 0 and not isinstance(data, str):
                self._f.write(memoryview(data).cast("B")[:fit])
            self._budget.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(self._f, "name", None))
        self._budget.left -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()

    def __iter__(self):
        return iter(self._f)


@contextlib.contextmanager
def full_disk(monkeypatch: pytest.MonkeyPatch, budget: int) -> Iterator[_Budget]:
    """Patch ``open`` / ``io.open`` / ``os.fdopen`` (and safetensors' Rust writer) so writes fail after ``budget``."""
    import safetensors.torch

    state = _Budget(budget)
    real_open, real_fdopen, real_save = io.open, os.fdopen, safetensors.torch.save

    def limited(opener):
        def wrapped(file, mode="r", *args, **kwargs):
            f = opener(file, mode, *args, **kwargs)
            return _LimitedFile(f, state) if any(c in mode for c in "wax+") else f
        return wrapped

    def save_file(tensors, filename, metadata=None):
        with limited(real_open)(filename, "wb") as f:
            f.write(real_save(tensors, metadata=metadata))

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", limited(real_open))
        m.setattr(io, "open", limited(real_open))
        m.setattr(os, "fdopen", limited(real_fdopen))
        m.setattr(safetensors.torch, "save_file", save_file)
        yield state


@settings(max_examples=15)
@given(budget=st.integers(0, 20_000))
def test_full_disk_during_export(budget: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("exp")
    old = _export(d / "model")
    before = _snapshot(old)
    with case(CATEGORY, "full disk (ENOSPC) while writing an export folder"), pytest.MonkeyPatch.context() as mp:
        try:
            with full_disk(mp, budget):
                _export(d / "model", overwrite=True)
        except OSError as err:
            assert err.errno == errno.ENOSPC
            assert _snapshot(d / "model") == before, "the previous export changed"
            with case(CATEGORY, "full disk (ENOSPC) while writing an export folder: of which the disk filled"):
                pass
        else:
            read_export_dir(d / "model")  # it fitted: the new export is complete and verifies
        assert sorted(p.name for p in d.iterdir()) == ["model"], "temporary folders left behind"
        read_export_dir(d / "model")


@settings(max_examples=12)
@given(budget=st.integers(0, 60_000))
def test_full_disk_during_prepare(budget: int, corpus: dict[str, Path],
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("prep")
    manifest = open_dataset("covidx-cxr", corpus["covidx-cxr"])
    transform = cxr_preset(False, size=(16, 16))
    with case(CATEGORY, "full disk (ENOSPC) during prepare, then re-run"), pytest.MonkeyPatch.context() as mp:
        try:
            with full_disk(mp, budget):
                prepare(manifest, d / "cache", transform=transform, part_size=4)
        except OSError as err:
            assert err.errno == errno.ENOSPC
            assert not (d / "cache").exists(), "a cache folder appeared although prepare failed"
            with pytest.raises(FileNotFoundError):
                PreparedDataset(d / "cache")
            with case(CATEGORY, "full disk (ENOSPC) during prepare, then re-run: of which the disk filled"):
                pass
        prepare(manifest, d / "cache", transform=transform, part_size=4)
        fresh = prepare(manifest, d / "fresh", transform=transform, part_size=4)
        assert _samples_any(d / "cache") == _samples_any(fresh)


def _samples_any(out: Path) -> list[tuple]:
    return [(s["meta"]["id"], s["image"].numpy().tobytes()) for s in PreparedDataset(out)]


@settings(max_examples=10)
@given(budget=st.integers(0, len(DATA) + 2000))
def test_full_disk_during_download(budget: int, http_server) -> None:
    url = http_server.add("w.bin", DATA)
    spec = FileSpec(url=url, sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA), format="safetensors",
                    filename=f"w{budget}.bin")
    dest = cache_path(None, spec)
    with case(CATEGORY, "full disk (ENOSPC) during a download, then re-run"), pytest.MonkeyPatch.context() as mp:
        try:
            with full_disk(mp, budget):
                download(spec, progress=False, retries=1)
        except DownloadError as err:
            assert "No space left on device" in str(err) or "Errno 28" in str(err), err
            assert not dest.exists(), "a file that was never completed sits at the cache path"
            with case(CATEGORY, "full disk (ENOSPC) during a download, then re-run: of which the disk filled"):
                pass
        except OSError as err:
            assert err.errno == errno.ENOSPC
            assert not dest.exists()
        assert download(spec, progress=False).read_bytes() == DATA
        assert np.frombuffer(dest.read_bytes(), np.uint8).size == len(DATA)


def test_full_disk_write_nifti_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: write_nifti's hidden temp file stayed behind after a failed write."""
    from medzoo.data.imageio import write_nifti

    with case(CATEGORY, "full disk (ENOSPC) in write_nifti (regression)"):
        with full_disk(monkeypatch, 100), pytest.raises(OSError) as info:
            write_nifti(tmp_path / "v.nii.gz", np.zeros((16, 16, 16), np.float32), np.eye(4))
        assert info.value.errno == errno.ENOSPC
        assert list(tmp_path.iterdir()) == []


@settings(max_examples=10)
@given(budget=st.integers(0, 4_200_000))
def test_full_disk_during_checkpoint_save(budget: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(d / "last.pt", _ckpt_state(1))
    with case(CATEGORY, "full disk (ENOSPC) during a checkpoint save"), pytest.MonkeyPatch.context() as mp:
        try:
            with full_disk(mp, budget):
                save_checkpoint(d / "last.pt", _ckpt_state(2))
        except (OSError, RuntimeError) as err:  # RuntimeError: see test_full_disk_checkpoint_error_is_clear
            assert isinstance(err, OSError) or "inline_container" in str(err), err
            assert load_checkpoint(d / "last.pt")["step"] == 1, "the previous checkpoint was damaged"
            with case(CATEGORY, "full disk (ENOSPC) during a checkpoint save: of which the disk filled"):
                pass
        else:
            assert load_checkpoint(d / "last.pt")["step"] == 2
        assert sorted(p.name for p in d.iterdir()) == ["last.pt"], "a temp file was left behind"


def test_full_disk_checkpoint_error_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with full_disk(monkeypatch, 30):
        with pytest.raises(OSError) as info:
            save_checkpoint(tmp_path / "last.pt", _ckpt_state(2))
    assert info.value.errno == errno.ENOSPC
    assert "last.pt" in str(info.value)
