"""``medzoo predict``'s outputs under attack: hostile ids, colliding ids, control characters in file names, SIGKILL
mid-listing and a real full disk.

Before: listing ids were joined to the masks folder verbatim (``../../X`` and ``/abs/X`` wrote outside ``--out``;
an id naming a ground-truth file overwrote it), de-duplicated ids collided (``a``, ``a``, ``a-2``), a carriage
return in a file name split ``predictions.csv`` rows, and the tables were written once at the end (a SIGKILL or a
full disk lost every finished input, with nothing to resume from).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medzoo.cli.main import main
from medzoo.data.imageio import read_image, write_png
from medzoo.infer.inputs import InputItem
from medzoo.infer.predict import Predictor, TaskOutput, predict_inputs
from medzoo.infer.writers import write_masks
from tests.helpers import write_tiny_export
from tests.infer.scale_kit import (
    SEG_TASKS,
    assert_same_predictions,
    csv_rows,
    jsonl_records,
    mask_of,
    write_images,
    write_listing,
)
from tests.robustness.tally import case

CATEGORY = "predict"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny image model with a mask task (``lung``) and a multilabel task (``tb``)."""
    return write_tiny_export(tmp_path_factory.mktemp("export"), "seg", SEG_TASKS)


def _predict(export: str, *inputs: Path | str, out: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["-q", "predict", "--model", export, *map(str, inputs), "--out", str(out), *extra])


def _foreground(record: dict) -> int:
    """The voxel count the record gives the mask's label 1."""
    lung = record["tasks"]["lung"]
    return lung["voxels"][lung["labels"][1]]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------------------- D7
def test_listing_ids_cannot_write_outside_out(export: str, tmp_path: Path) -> None:
    images = write_images(tmp_path / "img", 3)
    truth = write_png(tmp_path / "gt" / "P1_lung.png", np.full((40, 40), 7, np.uint8))  # a ground-truth label
    listing = write_listing(tmp_path / "list.csv", images,
                            ["../../ESCAPED", str(tmp_path / "abs" / "dir" / "ABSOLUTE"), str(tmp_path / "gt" / "P1")])
    out = tmp_path / "work" / "out"
    before, truth_bytes = _files(tmp_path), truth.read_bytes()
    with case(CATEGORY, "hostile listing ids (../../X, /abs/X, an id naming a ground-truth file)"):
        assert _predict(export, listing, out=out) == 0
        outside = sorted(str(p) for p in _files(tmp_path) - before if out not in p.parents)
        assert outside == []
        assert truth.read_bytes() == truth_bytes
        masks = sorted(p.name for p in (out / "masks").iterdir())
        assert masks[0] == "ESCAPED_lung.png"
        assert masks[1].endswith("_abs_dir_ABSOLUTE_lung.png")
        assert masks[2].endswith("_gt_P1_lung.png")


def test_deduplicated_ids_never_collide(export: str, tmp_path: Path) -> None:
    a1 = write_images(tmp_path / "x", 1, prefix="a")[0].rename(tmp_path / "x" / "a.png")
    a2 = write_png(tmp_path / "y" / "a.png", np.random.default_rng(1).integers(0, 256, (36, 52), dtype=np.uint8))
    a3 = write_png(tmp_path / "z" / "a-2.png", np.random.default_rng(2).integers(0, 256, (48, 32), dtype=np.uint8))
    out = tmp_path / "out"
    with case(CATEGORY, "duplicate ids a, a, a-2"):
        assert _predict(export, a1, a2, a3, out=out) == 0
        records = jsonl_records(out)
        assert [r["id"] for r in records] == ["a", "a-3", "a-2"]
        assert len({r["tasks"]["lung"]["mask"] for r in records}) == 3
        for r, src in zip(records, (a1, a2, a3)):  # each mask is its own input's: same grid, same voxel count
            mask = mask_of(out, r)
            assert r["path"] == str(src)
            assert mask.shape == read_image(src)[0].shape[1:]
            assert int((mask == 1).sum()) == _foreground(r)


def test_write_masks_refuses_a_path_outside_its_folder(tmp_path: Path) -> None:
    out = TaskOutput("lung", "segmentation", ("0", "1"), probs=np.zeros((2, 4, 4)))
    with case(CATEGORY, "write_masks given ids or task names with separators"):
        for item_id, task in (("../x", "lung"), ("ok", "../../lung"), ("/etc/x", "lung")):
            item = InputItem(id=item_id, path="a.png", kind="image")
            with pytest.raises(ValueError, match="outside"):
                write_masks(tmp_path / "masks", item, {task: out}, {})
        assert _files(tmp_path) == set()


# -------------------------------------------------------------------------------------------------------- D16
def test_control_characters_in_file_names_keep_the_csv_valid(export: str, tmp_path: Path) -> None:
    names = ["cr\rx.png", "nl\nx.png", "tab\tx.png", 'q"uote,comma.png', "plain.png"]
    rng = np.random.default_rng(0)
    paths = [write_png(tmp_path / "img" / n, rng.integers(0, 256, (40, 40), dtype=np.uint8)) for n in names]
    with case(CATEGORY, "control characters in input file names (CR, LF, tab, quote, comma)"):
        assert _predict(export, *paths, out=tmp_path / "out") == 0
        rows = csv_rows(tmp_path / "out")
        assert len(rows) == len(names) * 4  # per input: lung background/foreground, tb, effusion
        assert {r["path"] for r in rows} == {str(p) for p in paths}
        assert {r["input"] for r in rows} == {"cr_x", "nl_x", "tab_x", 'q"uote,comma', "plain"}


# --------------------------------------------------------------------------------------------------------- D6
def _torn(out: Path) -> list[str]:
    """Zero-byte or unreadable masks under final names, and temp files."""
    bad = [p.name for p in (out / "masks").iterdir() if p.name.startswith(".") or p.stat().st_size == 0]
    for p in (out / "masks").glob("[!.]*"):
        try:
            read_image(p)
        except Exception:  # noqa: BLE001  (the test reports which file is torn)
            bad.append(p.name)
    return sorted(bad)


def _assert_tables_consistent(out: Path) -> list[dict]:
    records = jsonl_records(out)  # every line parses: no torn record
    assert (out / "predictions.jsonl").read_bytes().endswith(b"\n") or not records
    assert {r["input"] for r in csv_rows(out)} == {r["id"] for r in records}
    for r in records:
        assert int((mask_of(out, r) == 1).sum()) == _foreground(r)
    return records


def test_real_full_disk_keeps_finished_inputs_and_resume_completes(export: str, tmp_path: Path, small_disk,
                                                                  capsys) -> None:
    disk = small_disk("40k")  # tmpfs counts whole 4 KiB pages: a handful of masks fill it
    images = write_images(tmp_path / "img", 16)
    whole = predict_inputs(Predictor.from_ref(export), images, tmp_path / "whole", progress=False, batch_size=4)
    out = disk / "out"
    with case("faults", "real full disk (tmpfs) during `medzoo predict`, then --resume"):
        assert _predict(export, *images, out=out, extra=("--batch-size", "4")) == 2
        err = capsys.readouterr().err
        assert "No space left on device" in err
        assert f"{out}/" in err
        assert _torn(out) == []
        done = _assert_tables_consistent(out)
        assert 0 < len(done) < 16
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        assert _predict(export, *images, out=out, extra=("--batch-size", "4", "--resume")) == 0
        final = _assert_tables_consistent(out)
        assert [r["id"] for r in final] == [r["id"] for r in whole.records]
        for a, b in zip(whole.records, final):
            assert_same_predictions(a, b, tmp_path / "whole", out)


def _spawn_predict(export: str, listing: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "medzoo.cli.main", "-q", "predict", "--model", export, str(listing),
                             "--out", str(out), "--batch-size", "2", "--num-workers", "2", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_mid_listing_keeps_finished_inputs_and_resume_completes(export: str, tmp_path: Path) -> None:
    """A real ``medzoo predict`` process is SIGKILLed once a few inputs are in the tables (large images, so the
    listing takes seconds); then ``--resume`` completes it, equal to an unbroken run."""
    rng = np.random.default_rng(0)
    images = [write_png(tmp_path / "img" / f"cxr{i:02d}.png", rng.integers(0, 256, (1024, 1024), dtype=np.uint8))
              for i in range(40)]
    listing = write_listing(tmp_path / "list.csv", images)
    out = tmp_path / "out"
    with case("faults", "SIGKILL during `medzoo predict`, then --resume"):
        proc = _spawn_predict(export, listing, out)
        jsonl = out / "predictions.jsonl"
        while proc.poll() is None and (not jsonl.exists() or jsonl.read_bytes().count(b"\n") < 4):
            time.sleep(0.01)
        assert proc.poll() is None, f"predict finished before the kill: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _torn(out) == [] or all(n.startswith(".") for n in _torn(out))  # a killed write's temp file only
        done = _assert_tables_consistent(out)
        assert 4 <= len(done) < 40
        resumed = _spawn_predict(export, listing, out, "--resume")
        assert resumed.wait(timeout=200) == 0, resumed.stderr.read().decode()[-2000:]
        assert _torn(out) == []
        final = _assert_tables_consistent(out)
        whole = predict_inputs(Predictor.from_ref(export), [listing], tmp_path / "whole", progress=False,
                               batch_size=2)
        assert [r["id"] for r in final] == [r["id"] for r in whole.records]
        for a, b in zip(whole.records, final):
            assert_same_predictions(a, b, tmp_path / "whole", out)
