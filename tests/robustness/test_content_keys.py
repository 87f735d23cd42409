"""Caches keyed on content, not names: ``medzoo prepare`` caches and experiment cells.

Before: after one Shenzhen PNG's pixels were inverted in place, ``prepare`` returned the old cache (cached mean 0.296
against the file's 0.704); after ``init.pt`` was replaced by other weights, or a ``zoo:`` entry was re-published, an
experiment re-run printed "0 cells run, 1 reused". Each test here changes one input and checks that exactly what
depends on it is computed again, and that an unchanged input (even one rewritten with the same bytes) is reused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medzoo.cli.main import main
from medzoo.data import open_dataset
from medzoo.data.imageio import read_image, write_png
from medzoo.data.prepared import PreparedDataset, prepare
from medzoo.data.transforms import cxr_preset
from medzoo.experiment.runner import run_experiment
from medzoo.train.trainer import TrainResult
from medzoo.zoo.publish import publish
from tests.robustness.exports import tiny_export
from tests.robustness.tally import case, note

CATEGORY = "caches"


# ------------------------------------------------------------------------------------------------- medzoo prepare

@pytest.fixture
def shenzhen(corpus: dict[str, Path], tmp_path: Path) -> Path:
    return shutil.copytree(corpus["shenzhen"], tmp_path / "shenzhen")


def _prepare_cli(root: Path, out: Path) -> int:
    return main(["-q", "prepare", "shenzhen", str(root), "--out", str(out), "--size", "16"])


def _stamps(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()}


def _cached(out: Path) -> dict[str, np.ndarray]:
    return {s["meta"]["id"]: s["image"].numpy() for s in PreparedDataset(out)}


def test_prepare_reuses_a_cache_whose_inputs_are_unchanged(shenzhen: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    assert _prepare_cli(shenzhen, out) == 0
    before = _stamps(out)
    note(CATEGORY, "prepare cache", "keyed on records + options + every file's size/mtime + listings' sha256")
    with case(CATEGORY, "prepare cache: inputs unchanged (reused)"):
        assert _prepare_cli(shenzhen, out) == 0
        assert _stamps(out) == before


def test_prepare_rebuilds_after_an_image_changes_in_place(shenzhen: Path, tmp_path: Path) -> None:
    """The audit's attack: one PNG's pixels inverted in place, same name; no --overwrite needed."""
    out = tmp_path / "cache"
    assert _prepare_cli(shenzhen, out) == 0
    manifest = open_dataset("shenzhen", shenzhen)
    victim = manifest.records[0]
    pixels, _ = read_image(victim.image)
    write_png(victim.image, 255 - pixels[0])
    with case(CATEGORY, "prepare cache: one image inverted in place"):
        assert _prepare_cli(shenzhen, out) == 0
        fresh = prepare(open_dataset("shenzhen", shenzhen), tmp_path / "fresh", transform=cxr_preset(False, (16, 16)))
        np.testing.assert_array_equal(_cached(out)[victim.id], _cached(fresh)[victim.id])


def test_prepare_rebuilds_after_a_relabel_in_the_listing(corpus: dict[str, Path], tmp_path: Path) -> None:
    """An edited label in ``Data_Entry_2017_v2020.csv`` is a changed input of the same dataset: rebuilt."""
    root = shutil.copytree(corpus["nih-cxr14"], tmp_path / "nih")
    out = tmp_path / "cache"
    argv = ["-q", "prepare", "nih-cxr14", str(root), "--out", str(out), "--size", "16"]
    assert main(argv) == 0
    listing = root / "Data_Entry_2017_v2020.csv"
    lines = listing.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if ",No Finding," in line)
    lines[row] = lines[row].replace(",No Finding,", ",Hernia,")
    listing.write_text("\n".join(lines) + "\n")
    image_id = lines[row].split(",")[0]
    with case(CATEGORY, "prepare cache: a label edited in the listing"):
        assert main(argv) == 0
        sample = next(s for s in PreparedDataset(out) if s["meta"]["id"] == image_id)
        names = PreparedDataset(out).label_names["findings"]
        assert float(sample["label.findings"][names.index("Hernia")]) == 1.0


# ---------------------------------------------------------------------------------------------- experiment cells

def _run(corpus: Path) -> dict:
    return {"data_root": str(corpus),
            "model": {"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
                      "tasks": {"tb": {"type": "classification", "level": "image", "labels": ["normal", "tb"]}}},
            "data": [{"kind": "shenzhen", "root": "shenzhen", "tasks": {"tb": "tb"},
                      "transform": {"preset": "cxr", "size": [32]}, "batch_size": 2,
                      "split": {"fractions": {"train": 0.5, "val": 0.25, "test": 0.25}}}],
            "train": {"epochs": 1, "max_steps": 2, "device": "cpu"},
            "output": {"tensorboard": False, "log_images": False}}


def _experiment(root: Path, init: str) -> dict:
    return {"name": "t", "run": _run(root), "tasks": {"tb": {"metric": "test/tb/accuracy"}},
            "inits": {"scratch": {"source": "scratch"}, "pre": {"source": init}}, "fractions": [1.0],
            "seeds": [0]}


class _Fit:
    """A stand-in trainer: records which init each run started from and whether it found a cut-short run."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.fail = fail

    def __call__(self, run_cfg, *, resume, quiet, callbacks) -> TrainResult:
        run = Path(run_cfg.output.dir)
        self.calls.append((run_cfg.init.source, (run / "last.pt").exists()))
        run.mkdir(parents=True, exist_ok=True)
        (run / "last.pt").write_bytes(b"step 1")
        if self.fail:
            raise RuntimeError("killed")
        return TrainResult(str(run), 2, 2, {"test/tb/accuracy": 0.5}, None, [])


@pytest.fixture
def data_root(corpus: dict[str, Path], tmp_path: Path) -> Path:
    shutil.copytree(corpus["shenzhen"], tmp_path / "data" / "shenzhen")
    return tmp_path / "data"


def _cells(exp: dict, out: Path, fit: _Fit | None = None) -> list[str]:
    fit = fit or _Fit()
    run_experiment(exp, output=out, fit_fn=fit, plots=False)
    return sorted(source for source, _ in fit.calls)


def test_cells_with_unchanged_inputs_are_reused(data_root: Path, tmp_path: Path) -> None:
    init = tmp_path / "init.pt"
    init.write_bytes(b"weights A" * 100)
    exp = _experiment(data_root, f"ckpt:{init}")
    assert _cells(exp, tmp_path / "exp") == [f"ckpt:{init}", "scratch"]
    init.write_bytes(b"weights A" * 100)  # the same bytes written again: a new mtime, the same content
    note(CATEGORY, "experiment cell", "keyed on the resolved run config + sha256 of the init weights + the data "
         "manifest's content fingerprint")
    with case(CATEGORY, "experiment cell: inputs unchanged (reused)"):
        assert _cells(exp, tmp_path / "exp") == []


def test_cell_runs_again_after_its_init_weights_are_replaced(data_root: Path, tmp_path: Path) -> None:
    """The audit's attack: ``init.pt`` replaced by other weights of the same size; only the cells using it rerun."""
    init = tmp_path / "init.pt"
    init.write_bytes(b"weights A" * 100)
    exp = _experiment(data_root, f"ckpt:{init}")
    _cells(exp, tmp_path / "exp")
    st = init.stat()
    init.write_bytes(b"weights B" * 100)
    os.utime(init, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its old mtime restored
    with case(CATEGORY, "experiment cell: init weights replaced (same size, mtime restored)"):
        assert _cells(exp, tmp_path / "exp") == [f"ckpt:{init}"]


def test_cell_runs_again_after_its_zoo_entry_is_republished(data_root: Path, tmp_path: Path) -> None:
    home = Path(os.environ["MEDZOO_HOME"])
    exports = [tiny_export(tmp_path / f"e{seed}", "cxr", seed) for seed in range(2)]
    publish(exports[0], "mine", exports[0].resolve().as_uri() + "/", catalog=home / "catalogs" / "mine.yaml")
    exp = _experiment(data_root, "zoo:mine")
    _cells(exp, tmp_path / "exp")
    publish(exports[1], "mine", exports[1].resolve().as_uri() + "/", catalog=home / "catalogs" / "mine.yaml",
            replace=True)
    with case(CATEGORY, "experiment cell: zoo entry re-published (publish --replace)"):
        assert _cells(exp, tmp_path / "exp") == ["zoo:mine"]


def test_cells_run_again_after_a_data_file_changes(data_root: Path, tmp_path: Path) -> None:
    exp = _experiment(data_root, "scratch")
    _cells(exp, tmp_path / "exp")
    image = open_dataset("shenzhen", data_root / "shenzhen").records[0].image
    pixels, _ = read_image(image)
    write_png(image, 255 - pixels[0])
    with case(CATEGORY, "experiment cell: one training image inverted in place"):
        assert _cells(exp, tmp_path / "exp") == ["scratch", "scratch"]


def test_a_cut_short_cell_resumes_only_under_its_own_inputs(data_root: Path, tmp_path: Path) -> None:
    """A cell killed mid-training resumes from its ``last.pt`` when nothing changed, and starts over (its run folder
    removed) when its init weights changed meanwhile."""
    init = tmp_path / "init.pt"
    init.write_bytes(b"weights A" * 100)
    exp = {**_experiment(data_root, f"ckpt:{init}"), "inits": {"pre": {"source": f"ckpt:{init}"}}}
    for changed in (False, True):
        out = tmp_path / f"exp{int(changed)}"
        with pytest.raises(RuntimeError, match="killed"):
            _cells(exp, out, _Fit(fail=True))
        if changed:
            init.write_bytes(b"weights B" * 100)
        fit = _Fit()
        _cells(exp, out, fit)
        assert fit.calls == [(f"ckpt:{init}", not changed)]
    assert json.loads((tmp_path / "exp1" / "cells" / "tb-pre-f1-s0" / "result.json").read_text())["value"] == 0.5
