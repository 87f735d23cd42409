"""``medzoo demo`` end to end: the tiny test profile (whole pipeline, seconds) and ``--quick`` (slow)."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from medzoo.cli import demo_cmd, experiment_cmd

pytestmark = pytest.mark.timeout(300)


def _cli(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medzoo")
    module.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _results(exp_dir) -> dict[tuple[str, float], list[float]]:
    with open(exp_dir / "results.csv", newline="") as fh:
        out: dict = {}
        for r in csv.DictReader(fh):
            out.setdefault((r["init"], float(r["fraction"])), []).append(float(r["value"]))
    return out


def _check_demo_dir(out, printed: str, fractions: tuple[float, ...]) -> None:
    from medzoo.zoo.export import sha256_file

    exp = out / "experiment"
    values = _results(exp)
    assert set(values) == {(i, f) for i in ("scratch", "zoo", "zoo_frozen") for f in fractions}
    # The printed table and report.md show the measured values (one seed: the value itself).
    report = (out / "report.md").read_text()
    for vals in values.values():
        assert f"{sum(vals) / len(vals):.3f}" in report
        assert f"{sum(vals) / len(vals):.3f}" in printed
    for png in ("fraction_lung_seg.png", "curves_lung_seg.png"):
        assert (exp / png).read_bytes()[:4] == b"\x89PNG"
        assert f"experiment/{png}" in report
    # The zoo entry pins the sha256 of the exported weights.
    meta = json.loads((out / "zoo" / "export.json").read_text())
    weights = out / "zoo" / "exports" / meta["name"] / "model.safetensors"
    assert meta["sha256"] == sha256_file(weights)
    assert meta["sha256"] in (out / "zoo" / "catalogs" / "demo.yaml").read_text()
    claim = json.loads((out / "demo.json").read_text())["claim"]
    lowest = min(fractions)
    assert claim["zoo"] == pytest.approx(sum(values[("zoo", lowest)]) / len(values[("zoo", lowest)]))
    assert claim["holds"] == (claim["zoo"] > claim["scratch"])


def test_tiny_demo_end_to_end_and_rerun_reuses_everything(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    assert _cli(demo_cmd, ["demo", "--profile", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lung_seg: test/lung/dice/lung" in printed and "report:" in printed
    _check_demo_dir(out, printed, (0.5, 1.0))
    before = _results(out / "experiment")
    # Re-running trains nothing: corpus, pretraining, export and every cell are reused.
    from medzoo.train import trainer

    def no_training(self):
        raise AssertionError("the re-run trained again")

    monkeypatch.setattr(trainer.Trainer, "fit", no_training)
    assert _cli(demo_cmd, ["demo", "--profile", "tiny", "--out", str(out)]) == 0
    assert _results(out / "experiment") == before
    # A cell lost (say, a killed run) is the only thing trained on the next run.
    monkeypatch.undo()
    (out / "experiment" / "cells" / "lung_seg-zoo-f0.5-s0" / "result.json").unlink()
    calls = []
    real_fit = trainer.Trainer.fit
    monkeypatch.setattr(trainer.Trainer, "fit", lambda self: calls.append(self.cfg.output.dir) or real_fit(self))
    assert _cli(demo_cmd, ["demo", "--profile", "tiny", "--out", str(out)]) == 0
    assert len(calls) == 1 and "lung_seg-zoo-f0.5-s0" in calls[0]
    assert _results(out / "experiment") == before  # same seed, same numbers


def test_experiment_cli_runs_the_example_config(tmp_path, capsys):
    from medzoo.data.synth import write_synthetic_corpus

    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, seed=0, size="tiny", dicom=False)
    argv = ["experiment", "configs/transfer/lung_seg.yaml", "--out", str(tmp_path / "exp"),
            "--set", f"run.data_root={corpus}", "--set", "run.train.max_steps=1",
            "--set", "fractions=[1.0]", "--set", "seeds=[0]", "--set", "inits={scratch: {source: scratch}}",
            "--set", "eval_points=1", "--no-plots"]
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
    _check_demo_dir(out, printed, (0.1, 1.0))
