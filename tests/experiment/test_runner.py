"""The experiment runner: cell configs, resume (finished cells are not trained again), result files, paired
statistics and the sentences generated from them, thread-count independence, config errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from medzoo.config import ConfigError
from medzoo.experiment.config import load_experiment_config
from medzoo.experiment.parallel import pinned
from medzoo.experiment.report import summarise
from medzoo.experiment.runner import Cell, cell_run_config, list_cells, run_experiment
from medzoo.train import fit
from medzoo.train.trainer import TrainResult

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    from medzoo.data.synth import write_synthetic_corpus

    out = tmp_path_factory.mktemp("corpus")
    write_synthetic_corpus(out, seed=0, size="tiny", dicom=False)
    return out


def _run(corpus) -> dict:
    return {"data_root": str(corpus),
            "model": {"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
                      "tasks": {"tb": {"type": "classification", "level": "image", "labels": ["normal", "tb"]}}},
            "data": [{"kind": "shenzhen", "root": "shenzhen/ChinaSet_AllFiles", "tasks": {"tb": "tb"},
                      "transform": {"preset": "cxr", "size": [32]}, "batch_size": 2,
                      "split": {"fractions": {"train": 0.5, "val": 0.25, "test": 0.25}}}],
            "train": {"epochs": 1, "max_steps": 2, "device": "cpu"},
            "output": {"tensorboard": False, "log_images": False}}


def _experiment(corpus, **kw) -> dict:
    return {"name": "t", "run": _run(corpus), "tasks": {"tb": {"metric": "test/tb/accuracy"}},
            "inits": {"scratch": {"source": "scratch"}, "frozen": {"source": "scratch", "freeze_encoder": True}},
            "fractions": [0.5, 1.0], "seeds": [0, 1], **kw}


def _fake_fit(calls: list, values: dict):
    """A stand-in trainer: records each run config, returns a deterministic metric per (init, fraction, seed)."""

    def fit_fn(run_cfg, *, resume, quiet, callbacks):
        calls.append(run_cfg)
        frozen = run_cfg.train.freeze_encoder_epochs > 0
        key = (frozen, run_cfg.data[0].fraction, run_cfg.train.seed)
        v = values.setdefault(key, 0.1 * len(values) + 0.05)
        hist = [{"step": s, "epoch": s, "val/tb/accuracy": v * s / 2} for s in (1, 2)]
        return TrainResult(run_cfg.output.dir, 2, 2, {"test/tb/accuracy": v, "val/tb/accuracy": v}, None, hist)

    return fit_fn


def test_cell_config_sets_fraction_seed_init_and_split(tiny_corpus, tmp_path):
    exp = _experiment(tiny_corpus, split_seed=7)
    exp["inits"]["frozen"]["set"] = ["train.head_lr_mult=30"]
    cfg = load_experiment_config(exp)
    cells = list_cells(cfg)
    assert len(cells) == 1 * 2 * 2 * 2
    assert cells[0] == Cell("tb", "scratch", 0.5, 0)
    run = cell_run_config(cfg, Cell("tb", "frozen", 0.5, 1), tmp_path / "r")
    assert run.data[0].fraction == 0.5
    assert run.train.seed == 1
    assert run.data[0].split.seed == 7
    assert run.data[0].fraction_seed == 1  # each seed draws its own subset (the default, subsets: per_seed)
    assert run.train.head_lr_mult == 30  # the init's own overrides
    assert run.train.freeze_encoder_epochs == run.train.epochs
    assert run.output.dir == str(tmp_path / "r")
    scratch = cell_run_config(cfg, cells[0], tmp_path)
    assert scratch.train.freeze_encoder_epochs == 0
    assert scratch.train.head_lr_mult == 1
    fixed = load_experiment_config(_experiment(tiny_corpus, subsets="fixed"))
    assert cell_run_config(fixed, Cell("tb", "scratch", 0.5, 1), tmp_path).data[0].fraction_seed is None


def test_each_seed_draws_its_own_subset_and_the_test_set_stays(tmp_path):
    """Real splits on a 40-patient set: the subsets differ by seed and are nested across fractions; test is fixed."""
    from medzoo.data.synth import SIZES
    from medzoo.data.synth.tb import write_montgomery
    from medzoo.models import create_model
    from medzoo.train.data import build_datasets

    write_montgomery(tmp_path / "montgomery", 0, dataclasses.replace(SIZES["tiny"], tb=40))
    run = {"data_root": str(tmp_path),
           "model": {"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]},
                     "tasks": {"lung": {"type": "segmentation", "level": "image", "labels": ["background", "lung"]}}},
           "data": [{"kind": "montgomery", "root": "montgomery/MontgomerySet", "tasks": {"mask": "lung"},
                     "transform": {"preset": "cxr", "size": [32]}}],
           "train": {"max_steps": 1, "device": "cpu"}, "output": {"tensorboard": False, "log_images": False}}
    cfg = load_experiment_config({"run": run, "tasks": {"lung": {"metric": "test/lung/dice/lung"}},
                                  "fractions": [0.25, 0.5], "seeds": [0, 1, 2]})
    ids, model = {}, None
    for cell in list_cells(cfg):
        rc = cell_run_config(cfg, cell, tmp_path / "r")
        model = model or create_model(rc.model)
        splits = build_datasets(rc, model)[0].splits
        ids[(cell.fraction, cell.seed)] = {r.patient_id for r in splits["train"].records}
        ids[("test", cell.fraction, cell.seed)] = {r.patient_id for r in splits["test"].records}
    assert len({frozenset(ids[(0.25, s)]) for s in (0, 1, 2)}) == 3
    for s in (0, 1, 2):
        assert ids[(0.25, s)] < ids[(0.5, s)]
        assert ids[("test", 0.25, s)] == ids[("test", 0.5, 0)]


def test_resume_skips_finished_cells_and_files_hold_measured_values(tiny_corpus, tmp_path):
    calls, values = [], {}
    cfg = _experiment(tiny_corpus)
    first = run_experiment(cfg, output=tmp_path, fit_fn=_fake_fit(calls, values), plots=False)
    assert len(calls) == 8
    assert len(first.ran) == 8
    assert not first.skipped
    # A run cut short: one result lost. Only that cell trains again.
    lost = tmp_path / "cells" / "tb-frozen-f1-s1" / "result.json"
    lost.unlink()
    again = run_experiment(cfg, output=tmp_path, fit_fn=_fake_fit(calls, values), plots=False)
    assert len(calls) == 9
    assert again.ran == ["tb-frozen-f1-s1"]
    assert len(again.skipped) == 7
    # A third run trains nothing.
    run_experiment(cfg, output=tmp_path, fit_fn=_fake_fit(calls, values), plots=False)
    assert len(calls) == 9
    # results.csv holds each cell's value as its result.json records it.
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    for r in rows:
        saved = json.loads((tmp_path / "cells" / r["cell"] / "result.json").read_text())
        assert float(r["value"]) == saved["value"] == saved["metrics"]["test/tb/accuracy"]
    # results.md holds mean ± sample std over seeds, computed here independently.
    md = (tmp_path / "results.md").read_text()
    for init, frozen in (("scratch", False), ("frozen", True)):
        line = next(row for row in md.splitlines() if row.startswith(f"| {init} |"))
        for f in (0.5, 1.0):
            v = np.array([values[(frozen, f, s)] for s in (0, 1)])
            assert f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" in line
    assert "fraction 0.5" in first.table
    assert "scratch" in first.table


def test_changed_config_runs_the_cell_again(tiny_corpus, tmp_path):
    calls, values = [], {}
    run_experiment(_experiment(tiny_corpus, seeds=[0]), output=tmp_path, fit_fn=_fake_fit(calls, values),
                   plots=False)
    n = len(calls)
    run_experiment(_experiment(tiny_corpus, seeds=[0]), ["split_seed=3"], output=tmp_path,
                   fit_fn=_fake_fit(calls, values), plots=False)
    assert len(calls) == 2 * n


def test_real_runs_are_deterministic_and_plots_written(tiny_corpus, tmp_path):
    """Two-step runs: the same numbers with 2 and with 1 torch thread outside the cell (each cell pins its own);
    real histories make the curves."""
    exp = _experiment(tiny_corpus, inits={"scratch": {"source": "scratch"}}, fractions=[1.0], seeds=[0],
                      eval_points=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = run_experiment(exp, output=tmp_path / "a", workers=1)
        assert torch.get_num_threads() == 2  # restored after the cell
        torch.set_num_threads(1)
        b = run_experiment(exp, output=tmp_path / "b", workers=1)
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "a" / "results.csv").read_bytes() == (tmp_path / "b" / "results.csv").read_bytes()
    ma, mb = a.rows[0]["metrics"], b.rows[0]["metrics"]
    assert a.rows[0]["steps"] == 2
    assert set(ma) == set(mb)
    for k in ma:
        assert ma[k] == mb[k] or (math.isnan(ma[k]) and math.isnan(mb[k])), k
    assert a.rows[0]["history"], "the run recorded no validation history"
    for key in ("fraction:tb", "curves:tb", "csv", "md"):
        assert (tmp_path / "a" / a.files[key].split("/")[-1]).stat().st_size > 0
    # The runner's numbers are the trainer's: a direct fit of the same cell config agrees.
    with pinned():
        direct = fit(cell_run_config(load_experiment_config(exp), list_cells(load_experiment_config(exp))[0],
                                     tmp_path / "direct"))
    assert direct.metrics["test/tb/accuracy"] == a.rows[0]["value"]


def _rows(values: dict[tuple[str, float], list[float]], mode: str = "max") -> list[dict]:
    return [{"task": "t", "init": init, "kind": "init", "fraction": f, "seed": s, "metric": "test/t/dice/x",
             "mode": mode, "value": v} for (init, f), vals in values.items() for s, v in enumerate(vals)]


def test_paired_differences_match_scipy():
    from scipy import stats

    from medzoo.experiment.report import paired_differences

    scratch, zoo = [0.80, 0.85, 0.78, 0.90, 0.83], [0.84, 0.86, 0.80, 0.89, 0.88]
    rows = _rows({("scratch", 0.1): scratch, ("zoo", 0.1): zoo})
    (p,) = paired_differences(rows, "scratch")
    ci = stats.ttest_rel(zoo, scratch).confidence_interval(0.95)
    assert p["mean"] == pytest.approx(np.mean(np.subtract(zoo, scratch)), abs=1e-12)
    assert (p["lo"], p["hi"]) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
    assert (p["better"], p["worse"], p["ties"], p["n"]) == (4, 1, 0, 5)
    (low,) = paired_differences(_rows({("scratch", 0.1): scratch, ("zoo", 0.1): zoo}, mode="min"), "scratch")
    assert (low["better"], low["worse"]) == (1, 4)  # for a loss, lower is better


@pytest.mark.parametrize("zoo, verdict", [([0.84, 0.86, 0.80, 0.91, 0.85], "lies above 0"),
                                          ([0.76, 0.84, 0.75, 0.88, 0.80], "lies below 0"),
                                          ([0.84, 0.83, 0.80, 0.89, 0.82], "includes 0")])
def test_claims_say_what_the_interval_supports(zoo, verdict):
    from medzoo.experiment.report import claims, paired_differences

    rows = _rows({("scratch", 0.1): [0.80, 0.85, 0.78, 0.90, 0.83], ("zoo", 0.1): zoo})
    paired = paired_differences(rows, "scratch")
    sentence = claims(rows, paired)[0]
    assert verdict in sentence
    assert f"{paired[0]['lo']:+.4f} to {paired[0]['hi']:+.4f}" in sentence
    assert f"better on {paired[0]['better']} of 5" in sentence
    assert ("scores higher" in sentence) == (paired[0]["lo"] > 0)


def test_one_seed_gives_no_interval_and_no_conclusion():
    from medzoo.experiment.report import claims, paired_differences

    rows = _rows({("scratch", 1.0): [0.8], ("zoo", 1.0): [0.9]})
    paired = paired_differences(rows, "scratch")
    assert math.isnan(paired[0]["lo"])
    assert math.isnan(paired[0]["hi"])
    assert "no conclusion" in claims(rows, paired)[0]


def test_baselines_are_placed_against_the_trained_inits():
    from medzoo.experiment.report import claims, format_table, paired_differences

    rows = _rows({("scratch", 1.0): [0.90, 0.92], ("zoo", 1.0): [0.91, 0.93]})
    rows += [{**r, "init": "threshold", "kind": "baseline", "value": v} for r, v in zip(rows[:2], (0.6, 0.62))]
    text = claims(rows, paired_differences(rows, "scratch"))
    assert any("threshold 0.610 ± 0.014, below every trained init (the lowest: scratch 0.910)" in c for c in text)
    assert "threshold (baseline)" in format_table(summarise(rows))


def test_summarise_matches_numpy():
    rows = [{"task": "t", "init": i, "fraction": f, "seed": s, "metric": "m", "value": float(v)}
            for (i, f, s), v in zip([("a", 0.1, 0), ("a", 0.1, 1), ("a", 0.1, 2), ("b", 0.1, 0)], [3, 5, 10, 7])]
    a, b = summarise(rows)
    assert a["n"] == 3
    assert a["mean"] == pytest.approx(6.0)
    assert a["std"] == pytest.approx(np.std([3, 5, 10], ddof=1))
    assert b["n"] == 1
    assert b["std"] == 0.0
    assert b["values"] == [7.0]


@pytest.mark.parametrize("override, key", [("fractions=[0]", "fractions"), ("seeds=[1, 1]", "seeds"),
                                           ("tasks.tb.mode=up", "tasks.tb.mode"), ("inits={}", "inits"),
                                           ("fractoins=[1]", "fractoins")])
def test_bad_experiment_config_names_the_key(tiny_corpus, override, key):
    with pytest.raises(ConfigError, match=key):
        load_experiment_config(_experiment(tiny_corpus), [override])


def test_missing_metric_is_an_error(tiny_corpus, tmp_path):
    exp = _experiment(tiny_corpus, tasks={"tb": {"metric": "test/tb/nope"}}, seeds=[0], fractions=[1.0])
    with pytest.raises(KeyError, match="test/tb/nope"):
        run_experiment(exp, output=tmp_path, fit_fn=_fake_fit([], {}), plots=False)


@pytest.mark.parametrize("every_epoch, saves", [(True, 3), (False, 1)])
def test_last_checkpoint_every_epoch_or_only_at_the_end(tiny_corpus, tmp_path, monkeypatch, every_epoch, saves):
    from medzoo.train import trainer

    run = _run(tiny_corpus)
    run["data"][0]["batch_size"] = 8  # one batch per epoch
    run["train"] = {"epochs": 3, "device": "cpu", "eval_every": 100}
    run["output"] = {**run["output"], "dir": str(tmp_path / "run"), "last_every_epoch": every_epoch}
    names = []
    real = trainer.Trainer.save
    monkeypatch.setattr(trainer.Trainer, "save", lambda self, name: names.append((self.step, name)) or real(self, name))
    res = fit(run)
    assert res.step == 3
    assert [n for n in names if n[1] == "last.pt"] == ([(1, "last.pt"), (2, "last.pt"), (3, "last.pt")] if every_epoch
                                                       else [(3, "last.pt")])
    assert len([n for n in names if n[1] == "last.pt"]) == saves
    assert (tmp_path / "run" / "last.pt").is_file()
