"""The experiment runner: cell configs, resume (finished cells are not trained again), result files, config errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medzoo.config import ConfigError
from medzoo.experiment.config import load_experiment_config
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
    cfg = load_experiment_config(_experiment(tiny_corpus, split_seed=7))
    cells = list_cells(cfg)
    assert len(cells) == 1 * 2 * 2 * 2 and cells[0] == Cell("tb", "scratch", 0.5, 0)
    run = cell_run_config(cfg, Cell("tb", "frozen", 0.5, 1), tmp_path / "r")
    assert run.data[0].fraction == 0.5 and run.train.seed == 1 and run.data[0].split.seed == 7
    assert run.train.freeze_encoder_epochs == run.train.epochs and run.output.dir == str(tmp_path / "r")
    assert cell_run_config(cfg, cells[0], tmp_path).train.freeze_encoder_epochs == 0


def test_resume_skips_finished_cells_and_files_hold_measured_values(tiny_corpus, tmp_path):
    calls, values = [], {}
    cfg = _experiment(tiny_corpus)
    first = run_experiment(cfg, output=tmp_path, fit_fn=_fake_fit(calls, values), plots=False)
    assert len(calls) == 8 and len(first.ran) == 8 and not first.skipped
    # A run cut short: one result lost. Only that cell trains again.
    lost = tmp_path / "cells" / "tb-frozen-f1-s1" / "result.json"
    lost.unlink()
    again = run_experiment(cfg, output=tmp_path, fit_fn=_fake_fit(calls, values), plots=False)
    assert len(calls) == 9 and again.ran == ["tb-frozen-f1-s1"] and len(again.skipped) == 7
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
            assert f"{v.mean():.3f} ± {v.std(ddof=1):.3f} (n=2)" in line
    assert "fraction 0.5" in first.table and "scratch" in first.table


def test_changed_config_runs_the_cell_again(tiny_corpus, tmp_path):
    calls, values = [], {}
    run_experiment(_experiment(tiny_corpus, seeds=[0]), output=tmp_path, fit_fn=_fake_fit(calls, values),
                   plots=False)
    n = len(calls)
    run_experiment(_experiment(tiny_corpus, seeds=[0]), ["split_seed=3"], output=tmp_path,
                   fit_fn=_fake_fit(calls, values), plots=False)
    assert len(calls) == 2 * n


def test_real_runs_are_deterministic_and_plots_written(tiny_corpus, tmp_path):
    """Two-step runs: the same seed gives the same numbers twice on CPU; real histories make the curves."""
    exp = _experiment(tiny_corpus, inits={"scratch": {"source": "scratch"}}, fractions=[1.0], seeds=[0],
                      eval_points=2)
    a = run_experiment(exp, output=tmp_path / "a")
    b = run_experiment(exp, output=tmp_path / "b")
    ma, mb = a.rows[0]["metrics"], b.rows[0]["metrics"]
    assert a.rows[0]["steps"] == 2 and set(ma) == set(mb)
    for k in ma:
        assert ma[k] == mb[k] or (math.isnan(ma[k]) and math.isnan(mb[k])), k
    assert a.rows[0]["history"], "the run recorded no validation history"
    for key in ("fraction:tb", "curves:tb", "csv", "md"):
        assert (tmp_path / "a" / a.files[key].split("/")[-1]).stat().st_size > 0
    # The runner's numbers are the trainer's: a direct fit of the same cell config agrees.
    direct = fit(cell_run_config(load_experiment_config(exp), list_cells(load_experiment_config(exp))[0],
                                 tmp_path / "direct"))
    assert direct.metrics["test/tb/accuracy"] == a.rows[0]["value"]


def test_summarise_matches_numpy():
    rows = [{"task": "t", "init": i, "fraction": f, "seed": s, "metric": "m", "value": float(v)}
            for (i, f, s), v in zip([("a", 0.1, 0), ("a", 0.1, 1), ("a", 0.1, 2), ("b", 0.1, 0)], [3, 5, 10, 7])]
    a, b = summarise(rows)
    assert a["n"] == 3 and a["mean"] == pytest.approx(6.0) and a["std"] == pytest.approx(np.std([3, 5, 10], ddof=1))
    assert b["n"] == 1 and b["std"] == 0.0 and b["values"] == [7.0]


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
