"""A torn demo cache: a run killed while writing one of its markers must not block every later run.

Before: ``zoo/export.json`` was written with ``write_text``; cut short, every ``medzoo demo`` after it failed with
"Unterminated string starting at: line 1 column 23" (no file named) and never repaired it. Now each marker is written
atomically, and a marker that does not parse (or a published entry that no longer loads back) means the step is done
again, with a warning naming the file.

A small profile (1 pretraining step, 1 fine-tuning step, one fraction and seed) runs once; then each marker in turn is
cut in half, or the whole run is killed with SIGKILL at two points, and the demo is run again: it must finish with
the same table as the undisturbed run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from medzoo.experiment.demo import PROFILES, DemoResult, run_demo
from tests.robustness.tally import case, note

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CATEGORY = "faults"
MICRO = replace(PROFILES["tiny"], pretrain_steps=1, finetune_steps=1, fractions=(1.0,), seeds=1, random_probe=False)
REPO = Path(__file__).resolve().parents[2]
# marker -> the step a torn copy must make the demo redo
MARKERS = {"zoo/export.json": "publish", "zoo/catalogs/demo.yaml": "publish", "pretrain/result.json": "pretraining",
           "experiment/cells/lung_seg-zoo-f1-s0/result.json": "cell", "corpus/demo-corpus.json": "corpus"}


def _demo(out: Path) -> DemoResult:
    return run_demo(out, MICRO, workers=1, progress=False)


def _tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def torn_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[DemoResult, DemoResult, list[str]]]:
    """One demo, then for each marker: cut it in half, run again. marker -> (first result, re-run result, warnings)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    first = _demo(out)
    runs = {}
    for marker in MARKERS:
        _tear(out / marker)
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("medzoo").addHandler(handler)
        try:
            again = _demo(out)
        finally:
            logging.getLogger("medzoo").removeHandler(handler)
        runs[marker] = (first, again, [r.getMessage() for r in records])
    return runs


@pytest.mark.parametrize("marker", list(MARKERS))
def test_torn_marker_is_redone_and_the_demo_finishes(torn_runs, marker: str) -> None:
    first, again, warnings = torn_runs[marker]
    note(CATEGORY, "torn demo cache", "a marker cut in half (or SIGKILL) is detected and its step redone; the "
         "re-run gives the same table")
    with case(CATEGORY, f"torn demo cache: {marker}"):
        assert again.table == first.table
        assert again.paired_table == first.paired_table


@pytest.mark.parametrize("marker", ["zoo/export.json", "pretrain/result.json", "corpus/demo-corpus.json"])
def test_torn_marker_is_named_in_a_warning(torn_runs, marker: str) -> None:
    _, _, warnings = torn_runs[marker]
    assert any(marker.split("/")[-1] in w and "redoing" in w for w in warnings), warnings


def test_torn_publication_is_published_again(torn_runs) -> None:
    _, again, _ = torn_runs["zoo/catalogs/demo.yaml"]
    assert again.zoo["reused"] is False
    assert json.loads((Path(again.out) / "zoo" / "export.json").read_text())["name"] == "demo.resnet10.multitask"


# ------------------------------------------------------------------------------------------------ a real SIGKILL

_CHILD = ("import sys; from medzoo.experiment.demo import run_demo; from tests.robustness.test_torn_demo import MICRO; "
          "run_demo(sys.argv[1], MICRO, workers=1, progress=False)")


def _kill_when(out: Path, ready) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the demo ended before the kill point: {proc.stderr.read()[-2000:]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_two_points_then_rerun_gives_the_same_table(torn_runs, tmp_path: Path) -> None:
    """Killed once while pretraining has started and once after the zoo was published; the third run finishes."""
    first = torn_runs["zoo/export.json"][0]
    out = tmp_path / "demo"
    with case(CATEGORY, "torn demo cache: SIGKILL mid-run twice, then a re-run"):
        _kill_when(out, lambda: (out / "pretrain").is_dir())
        _kill_when(out, lambda: (out / "zoo" / "export.json").is_file())
        assert _demo(out).table == first.table
