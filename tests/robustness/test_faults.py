"""Faults: SIGKILL in the middle of a download, of ``medzoo prepare`` or of a checkpoint save, and the corrupt files
a torn run can leave.

- SIGKILL: a subprocess is killed while it writes; afterwards the last good state is intact (no cached file, the
  previous cache, the previous checkpoint), and re-running completes with results identical to an undisturbed run.
- Corrupt leftovers (regressions): a cut or garbled prepared-cache ``index.json`` or ``.npy``, or corrupt export
  folder files, are errors naming the file.

A full disk is in ``test_faults_enospc.py`` (a patched ``open``) and ``test_full_disk.py`` (a real tmpfs).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medzoo.data import open_dataset
from medzoo.data.prepared import PreparedDataset, prepare
from medzoo.data.transforms import cxr_preset
from medzoo.zoo.checkpoint import CheckpointError, load_checkpoint
from medzoo.zoo.download import cache_path, download
from medzoo.zoo.export import read_export_dir
from medzoo.zoo.spec import FileSpec
from tests.robustness.faults_kit import CATEGORY, DATA
from tests.robustness.faults_kit import ckpt_state as _ckpt_state
from tests.robustness.faults_kit import small_export as _export
from tests.robustness.faults_kit import snapshot as _snapshot
from tests.robustness.tally import case

REPO = Path(__file__).resolve().parents[2]


def _spawn(code: str, home: Path) -> subprocess.Popen:
    env = {**os.environ, "MEDZOO_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fails if it ends first."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"process ended before the kill point: {proc.communicate()[1][-2000:]!r}"
        assert time.monotonic() - t0 < timeout, "kill point never reached"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


# ---------------------------------------------------------------------------------------------------- SIGKILL

def test_sigkill_during_download_then_resume(http_server, tmp_path: Path) -> None:
    url = http_server.add("w.bin", DATA)
    spec = FileSpec(url=url, sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA), format="safetensors")
    home = Path(os.environ["MEDZOO_HOME"])
    dest = cache_path(None, spec)
    part = dest.with_name(dest.name + ".part")
    http_server.switches.chunk_delay = 0.01  # 32 chunks of 4 KiB: about 0.3 s of transfer
    code = ("from medzoo.zoo.download import download; from medzoo.zoo.spec import FileSpec; "
            f"download(FileSpec(url={url!r}, sha256={spec.sha256!r}, size={spec.size}, format='safetensors'), "
            "progress=False)")
    with case(CATEGORY, "SIGKILL during a download, then re-run"):
        proc = _spawn(code, home)
        _kill_when(proc, lambda: part.is_file() and part.stat().st_size >= 16 * 1024)
        assert not dest.exists(), "a killed download left a file at the cache path"
        kept = part.stat().st_size
        assert 0 < kept < len(DATA)
        http_server.switches.chunk_delay = 0.0
        assert download(spec, progress=False).read_bytes() == DATA
        resumed = http_server.requests[-1]
        assert resumed.status == 206
        assert resumed.headers.get("Range") == f"bytes={kept}-"
        assert not part.exists()


SLOW_SAVE = ("import numpy as np, time, sys; _save = np.save\n"
             "def slow(*a, **k):\n    time.sleep(0.03); return _save(*a, **k)\n"
             "np.save = slow\nfrom medzoo.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")


def _prepare_cli(root: Path, out: Path, size: int, home: Path, overwrite: bool) -> subprocess.Popen:
    argv = ["-q", "prepare", "nih-cxr14", str(root), "--out", str(out), "--size", str(size)]
    argv += ["--overwrite"] if overwrite else []
    env = {**os.environ, "MEDZOO_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SLOW_SAVE, *argv], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _samples(out: Path) -> list[tuple]:
    ds = PreparedDataset(out)
    return [(s["meta"]["id"], s["image"].numpy().tobytes(), s["label.findings"].numpy().tobytes()) for s in ds]


@pytest.mark.slow
def test_sigkill_during_prepare_keeps_the_last_good_cache(corpus: dict[str, Path], tmp_path: Path) -> None:
    root, out, home = corpus["nih-cxr14"], tmp_path / "cache", Path(os.environ["MEDZOO_HOME"])
    manifest = open_dataset("nih-cxr14", root)
    prepare(manifest, out, transform=cxr_preset(False, size=(16, 16)))  # the last good state
    good = _snapshot(out)
    staging = out.with_name(".cache.partial")
    with case(CATEGORY, "SIGKILL during `medzoo prepare`, then re-run"):
        proc = _prepare_cli(root, out, 24, home, overwrite=True)
        _kill_when(proc, lambda: len(list(staging.glob("parts/*/*.npy"))) >= 3)
        assert _snapshot(out) == good, "the finished cache changed under a killed run"
        assert not (staging / "index.json").exists()
        proc = _prepare_cli(root, out, 24, home, overwrite=True)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        fresh = prepare(manifest, tmp_path / "fresh", transform=cxr_preset(False, size=(24, 24)))
        assert _samples(out) == _samples(fresh)
        assert not staging.exists()


class _Stopped(Exception):
    """Ends ``prepare`` abruptly from inside its writer: nothing after it runs, as after a kill."""


def test_prepare_stopped_after_two_arrays_keeps_the_last_good_cache(corpus: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Smoke twin of the SIGKILL test above (slow): the run stops in process after writing two arrays (an exception,
    so the unfinished part is removed, as after a full disk; a SIGKILL leaves it, and the slow test covers that)."""
    root, out = corpus["nih-cxr14"], tmp_path / "cache"
    manifest = open_dataset("nih-cxr14", root)
    prepare(manifest, out, transform=cxr_preset(False, size=(16, 16)))  # the last good state
    good = _snapshot(out)
    staging = out.with_name(".cache.partial")
    real_save, saved = np.save, []

    def stop_after_two(*args, **kwargs):
        if len(saved) == 2:
            raise _Stopped
        saved.append(args[0])
        return real_save(*args, **kwargs)

    with case(CATEGORY, "`prepare` stopped after two arrays (in process), then re-run"):
        with monkeypatch.context() as patch:
            patch.setattr(np, "save", stop_after_two)
            with pytest.raises(_Stopped):
                prepare(manifest, out, transform=cxr_preset(False, size=(24, 24)), overwrite=True)
        assert _snapshot(out) == good, "the finished cache changed under a stopped run"
        assert len(saved) == 2  # the stop came mid-part
        assert not list(staging.glob("parts/*.tmp")), "an exception leaves no torn part behind (disk space back)"
        assert not (staging / "index.json").exists()
        prepare(manifest, out, transform=cxr_preset(False, size=(24, 24)), overwrite=True)
        fresh = prepare(manifest, tmp_path / "fresh", transform=cxr_preset(False, size=(24, 24)))
        assert _samples(out) == _samples(fresh)
        assert not staging.exists()


# ---------------------------------------------------------------------------------------------------- corrupt leftovers

def _small_cache(corpus: dict[str, Path], out: Path) -> tuple[object, Path]:
    manifest = open_dataset("covidx-cxr", corpus["covidx-cxr"])
    return manifest, prepare(manifest, out, transform=cxr_preset(False, size=(8, 8)))


@pytest.mark.parametrize("content", [b"", b'{"format": "medzoo-prep', b"[]", b"\xff\xfe"])
def test_corrupt_cache_index(content: bytes, corpus: dict[str, Path], tmp_path: Path) -> None:
    """Regression: a cut index.json raised a bare JSONDecodeError (AttributeError for a list), in prepare() too."""
    manifest, out = _small_cache(corpus, tmp_path / "cache")
    (out / "index.json").write_bytes(content)
    with case(CATEGORY, "corrupt prepared cache: index.json, .npy (regression)"):
        with pytest.raises(ValueError, match="index.json: corrupt prepared-cache index"):
            PreparedDataset(out)
        with pytest.raises(FileExistsError, match="overwrite"):
            prepare(manifest, out, transform=cxr_preset(False, size=(8, 8)))
        prepare(manifest, out, transform=cxr_preset(False, size=(8, 8)), overwrite=True)
        assert len(PreparedDataset(out)) == len(manifest)


@pytest.mark.parametrize("cut", [0, 20, -10])
def test_corrupt_cache_array(cut: int, corpus: dict[str, Path], tmp_path: Path) -> None:
    """Regression: a cut .npy raised ValueError/EOFError without naming the file."""
    _, out = _small_cache(corpus, tmp_path / "cache")
    npy = sorted(out.rglob("*.image.npy"))[1]
    npy.write_bytes(npy.read_bytes()[:cut])
    with case(CATEGORY, "corrupt prepared cache: index.json, .npy (regression)"):
        ds = PreparedDataset(out)
        ds[0]
        with pytest.raises(ValueError, match="corrupt prepared-cache array") as info:
            ds[1]
        assert str(npy) in str(info.value)


@pytest.mark.parametrize("name,content", [("metadata.json", b"{"), ("metadata.json", b"[1]"),
                                          ("config.yaml", b"a: [1"), ("config.yaml", b"\xff"),
                                          ("model.safetensors", b"xx")])
def test_corrupt_export_files(name: str, content: bytes, tmp_path: Path) -> None:
    """Regression: corrupt export files raised JSONDecodeError / YAML ParserError / SafetensorError, naming no file."""
    out = _export(tmp_path / "model")
    (out / name).write_bytes(content)
    with case(CATEGORY, "corrupt export folder files (regression)"):
        for verify in (False, True):
            with pytest.raises(ValueError) as info:
                read_export_dir(out, verify=verify)
            assert str(out / name) in str(info.value) or (verify and "sha256" in str(info.value))


# ---------------------------------------------------------------------------------------------------- checkpoints

CKPT_WRITER = """
import sys, torch
from medzoo.train.checkpoint import save_checkpoint
path = sys.argv[1]
def state(step):
    g = torch.Generator().manual_seed(step)
    return {"model": {"w": torch.randn(1_000_000, generator=g)}, "step": step, "epoch": 0, "config": "model: {}"}
save_checkpoint(path, state(1))
print("saved 1", flush=True)
for step in range(2, int(sys.argv[2]) + 1):
    save_checkpoint(path, state(step))
"""


def test_sigkill_during_checkpoint_save(tmp_path: Path) -> None:
    path, tmp = tmp_path / "last.pt", tmp_path / "last.pt.tmp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with case(CATEGORY, "SIGKILL during a checkpoint save, then re-run"):
        proc = subprocess.Popen([sys.executable, "-c", CKPT_WRITER, str(path), "1000"], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _kill_when(proc, lambda: path.is_file() and tmp.is_file() and 0 < tmp.stat().st_size < 3_000_000)
        got = load_checkpoint(path)  # the last complete checkpoint, never a torn one
        assert got["step"] >= 1
        torch.testing.assert_close(got["model"]["w"], _ckpt_state(got["step"])["model"]["w"], rtol=0, atol=0)
        with pytest.raises(CheckpointError, match="last.pt.tmp"):
            load_checkpoint(tmp)  # the torn temp file is never mistaken for a checkpoint
        done = subprocess.run([sys.executable, "-c", CKPT_WRITER, str(path), "3"], env=env, cwd=REPO,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        again = load_checkpoint(path)
        assert again["step"] == 3
        assert not tmp.exists()
        torch.testing.assert_close(again["model"]["w"], _ckpt_state(3)["model"]["w"], rtol=0, atol=0)
