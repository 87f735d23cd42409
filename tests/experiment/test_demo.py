"""``medzoo demo`` end to end: the tiny test profile under 1 thread / 1 worker and under 2 threads / 2 workers gives
the same bytes; its report has the baseline rows and the paired intervals at every fraction, recomputed here from
results.csv; a re-run reuses everything. ``--quick`` is a slow test."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from medzoo.cli import demo_cmd, experiment_cmd
from medzoo.experiment.demo_report import TIMING_HEADING

pytestmark = pytest.mark.timeout(900)

ROWS = ("threshold (baseline)", "random_probe (baseline)", "zoo_probe (baseline)", "scratch", "zoo")
QUICK_ROWS = tuple(r for r in ROWS if not r.startswith("random_probe"))


def _cli(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medzoo")
    module.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _demo(out, threads: int, workers: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "medzoo.cli.main", "demo", "--profile", "tiny", "--out", str(out),
                           "--workers", str(workers)], env=env, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny demo twice, in fresh processes: 1 thread and 1 worker, then 2 threads and 2 workers."""
    base = tmp_path_factory.mktemp("demo")
    return {n: (base / f"t{n}", _demo(base / f"t{n}", threads=n, workers=n)) for n in (1, 2)}


def _above_timing(path) -> str:
    return path.read_text(encoding="utf-8").split(TIMING_HEADING)[0]


def _results(exp_dir) -> list[dict]:
    with open(exp_dir / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_two_runs_really_used_1_and_2_threads(runs):
    for n, (out, _) in runs.items():
        run = json.loads((out / "demo.json").read_text())
        assert run["torch_threads_outside_jobs"] == n
        assert run["workers"] == n


def test_tables_are_byte_identical_with_1_and_2_threads(runs):
    (one, printed_one), (two, printed_two) = runs[1], runs[2]
    assert printed_one.split("zoo entry")[0] == printed_two.split("zoo entry")[0]
    for name in ("results.csv", "results.md", "fraction_lung_seg.png", "paired_lung_seg.png"):
        assert (one / "experiment" / name).read_bytes() == (two / "experiment" / name).read_bytes(), name
    assert _above_timing(one / "report.md") == _above_timing(two / "report.md")
    # Every metric of every cell, not only the reported one (the fit cells' losses too), and the pretrained weights.
    for cell in sorted((one / "experiment" / "cells").iterdir()):
        a = json.loads((cell / "result.json").read_text())
        b = json.loads((two / "experiment" / "cells" / cell.name / "result.json").read_text())
        assert a["metrics"] == b["metrics"], cell.name
    zoo = [json.loads((d / "zoo" / "export.json").read_text())["sha256"] for d in (one, two)]
    assert zoo[0] == zoo[1]


def test_report_has_the_baselines_and_the_paired_interval_at_every_fraction(runs):
    out, printed = runs[1]
    report = _above_timing(out / "report.md")
    rows = _results(out / "experiment")
    fractions = sorted({float(r["fraction"]) for r in rows})
    value = {(r["init"], float(r["fraction"]), int(r["seed"])): float(r["value"]) for r in rows}
    seeds = sorted({int(r["seed"]) for r in rows})
    table = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    for label in ROWS:
        init = label.split(" ")[0]
        assert label in table, label
        for f in fractions:
            v = np.array([value[(init, f, s)] for s in seeds])
            assert f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" in table[label], (label, f)
        if init == "scratch":
            continue
        line = table[f"{init} − scratch"]
        for f in fractions:  # the 95% t interval of the paired differences, computed here with scipy
            d = np.array([value[(init, f, s)] - value[("scratch", f, s)] for s in seeds])
            half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            assert f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}] {(d > 0).sum()}/{len(d)}" in line
    assert "threshold (baseline)" in printed
    assert "zoo − scratch" in printed
    for f in fractions:
        assert f"Fraction {f:g}: zoo − scratch" in report


def test_rerun_reuses_everything_and_a_lost_cell_runs_again(runs, monkeypatch):
    """In the first run's folder (cells are keyed by their configs, which hold absolute paths); it ends as it began."""
    from medzoo.train import trainer

    out = runs[1][0]
    before = _results(out / "experiment")

    def no_training(self):
        raise AssertionError("the re-run trained again")

    monkeypatch.setattr(trainer.Trainer, "fit", no_training)
    assert _cli(demo_cmd, ["demo", "--profile", "tiny", "--out", str(out), "--workers", "1"]) == 0
    assert _results(out / "experiment") == before
    monkeypatch.undo()
    (out / "experiment" / "cells" / "lung_seg-zoo-f0.5-s0" / "result.json").unlink()
    calls = []
    real_fit = trainer.Trainer.fit
    monkeypatch.setattr(trainer.Trainer, "fit", lambda self: calls.append(self.cfg.output.dir) or real_fit(self))
    assert _cli(demo_cmd, ["demo", "--profile", "tiny", "--out", str(out), "--workers", "1"]) == 0
    assert len(calls) == 1
    assert "lung_seg-zoo-f0.5-s0" in calls[0]
    assert _results(out / "experiment") == before  # same seed, same numbers


def test_experiment_cli_runs_the_example_config(tmp_path, capsys):
    from medzoo.data.synth import write_synthetic_corpus

    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, seed=0, size="tiny", dicom=False)
    argv = ["experiment", "configs/transfer/lung_seg.yaml", "--out", str(tmp_path / "exp"),
            "--set", f"run.data_root={corpus}", "--set", "run.train.max_steps=1",
            "--set", "fractions=[1.0]", "--set", "seeds=[0]", "--set", "inits={scratch: {source: scratch}}",
            "--set", "eval_points=1", "--no-plots", "--workers", "1"]
    assert _cli(experiment_cmd, argv) == 0
    printed = capsys.readouterr().out
    assert "1 cell(s) run, 0 reused" in printed
    row = next(csv.DictReader(open(tmp_path / "exp" / "results.csv", newline="")))
    assert f"{float(row['value']):.3f}" in printed


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "quick"
    assert _cli(demo_cmd, ["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = _results(out / "experiment")
    assert {(r["init"], float(r["fraction"])) for r in rows} == {(label.split(" ")[0], f) for label in QUICK_ROWS
                                                                 for f in (0.1, 1.0)}
    for f in (0.1, 1.0):
        assert f"Fraction {f:g}: zoo − scratch" in printed
