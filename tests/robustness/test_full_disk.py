"""A real full disk: a small tmpfs mounted for the test (root only; skipped where mounting is not allowed).

The patched ``open`` of ``test_faults_enospc.py`` raises ``OSError(ENOSPC)`` *with* the file name, which real
disks never do: a failing ``write()`` (or the ``close()`` that flushes it) carries no file name, so ``medzoo
prepare`` printed only "error: [Errno 28] No space left on device". Here the kernel fills the disk, and every
error must name the path it was writing, leave no temp file, and leave no cache or result that looks complete.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from medzoo.cli.main import main
from medzoo.data.imageio import write_nifti, write_png
from medzoo.experiment.runner import run_experiment
from medzoo.train.trainer import TrainResult
from tests.robustness.tally import case, note

CATEGORY = "faults"


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name)


def test_prepare_on_a_full_disk_names_the_file(corpus: dict[str, Path], small_disk, capsys) -> None:
    disk = small_disk("64k")
    note(CATEGORY, "real full disk", "a tmpfs filled by the kernel: the error names the file being written; no temp "
         "file, no index.json")
    with case(CATEGORY, "real full disk (tmpfs) during `medzoo prepare`"):
        rc = main(["-q", "prepare", "nih-cxr14", str(corpus["nih-cxr14"]), "--out", str(disk / "cache"),
                   "--size", "64"])
        err = capsys.readouterr().err
        assert rc == 2
        assert "No space left on device" in err
        assert f"{disk}/" in err  # the path being written, not only the errno
        assert _leftovers(disk) == []
        assert not (disk / "cache" / "index.json").exists()


def _fit(run_cfg, *, resume, quiet, callbacks) -> TrainResult:
    return TrainResult(run_cfg.output.dir, 1, 1, {"test/tb/accuracy": 0.5, "loss": 0.25}, None, [])


def test_experiment_results_on_a_full_disk_name_the_file(corpus: dict[str, Path], small_disk) -> None:
    disk = small_disk("4k")  # one page: the first small file fills it
    run = {"data_root": str(corpus["shenzhen"].parent),
           "model": {"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
                     "tasks": {"tb": {"type": "classification", "level": "image", "labels": ["normal", "tb"]}}},
           "data": [{"kind": "shenzhen", "root": corpus["shenzhen"].name, "tasks": {"tb": "tb"},
                     "transform": {"preset": "cxr", "size": [32]}}],
           "train": {"max_steps": 1, "device": "cpu"}, "output": {"tensorboard": False, "log_images": False}}
    exp = {"name": "t", "run": run, "tasks": {"tb": {"metric": "test/tb/accuracy"}},
           "inits": {"scratch": {"source": "scratch"}}, "fractions": [1.0], "seeds": [0, 1]}
    with case(CATEGORY, "real full disk (tmpfs) during experiment result writes"):
        with pytest.raises(OSError) as info:
            run_experiment(exp, output=disk / "exp", fit_fn=_fit, plots=False)
        assert info.value.errno == errno.ENOSPC
        assert str(disk) in str(info.value.filename)
        assert _leftovers(disk) == []


@pytest.mark.parametrize("writer", ["nifti", "png"])
def test_image_writers_on_a_full_disk(tmp_path: Path, small_disk, writer: str) -> None:
    """A mask that does not fit: an error naming it, and nothing under its final name (no zero-byte PNG)."""
    disk = small_disk("8k")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 8), dtype=np.uint8)  # 32 KiB, incompressible
    with case(CATEGORY, f"real full disk (tmpfs) in write_{writer}"):
        with pytest.raises(OSError) as info:
            if writer == "nifti":
                write_nifti(disk / "mask.nii.gz", noise, np.eye(4))
            else:
                write_png(disk / "mask.png", noise.reshape(256, 128))
        assert info.value.errno == errno.ENOSPC
        assert "mask" in str(info.value.filename)
        assert sorted(p.name for p in disk.iterdir()) == []


def test_the_disk_is_really_full(small_disk) -> None:
    """The fixture's disk refuses what does not fit, as the tests above assume (a write of 8 KiB to a 4 KiB disk)."""
    disk = small_disk("4k")
    with pytest.raises(OSError) as info, open(disk / "x", "wb") as fh:
        fh.write(b"\0" * 8192)
    assert info.value.errno == errno.ENOSPC
