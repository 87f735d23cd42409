"""``medzoo evaluate --bootstrap / --localization / --model ...`` on the tiny synthetic corpus, checked against
independent computations: scores from a plain forward pass over the test split, the library tables on them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medzoo.cli.main import main
from medzoo.data import open_dataset
from medzoo.evaluation.checkpoint import ensemble_predictions
from medzoo.evaluation.heatmaps import model_heatmap_fn
from medzoo.evaluation.tables import auroc_ci_table, covidx_ct_tables
from medzoo.infer.ensemble import EnsembleError
from medzoo.metrics.localization import box_to_mask, localization_scores
from medzoo.train.evaluate import TaskPredictions
from tests.train.train_fixtures import run_config, write_config

N_BOOT = 50


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny NIH findings + COVIDx-CT series model trained 2 steps: (config path, checkpoint path)."""
    tmp = tmp_path_factory.mktemp("evalcli")
    cfg = write_config(run_config(corpus, tmp / "run", ["nih", "covidx_ct"], max_steps=2), tmp / "run.yaml")
    assert main(["train", "-c", str(cfg), "--quiet"]) == 0
    return cfg, tmp / "run" / "last.pt"


@pytest.fixture(scope="module")
def single(trained, tmp_path_factory):
    """One model evaluated with --bootstrap and --localization: the --out folder."""
    cfg, ckpt = trained
    out = tmp_path_factory.mktemp("single")
    code = main(["evaluate", "-c", str(cfg), "--checkpoint", str(ckpt), "--bootstrap", str(N_BOOT),
                           "--localization", "nih-cxr14", "--localization-root", str(_corpus_root(cfg) / "nih"),
                           "--out", str(out)])
    assert code == 0
    return out


def _corpus_root(cfg):
    return Path(yaml.safe_load(cfg.read_text())["data_root"])


def _load(path):
    return json.loads(path.read_text())


def _same(a, b):
    """Equal numbers (NaN == NaN, JSON null == NaN) with a tight tolerance."""
    a = math.nan if a is None else a
    b = math.nan if b is None else b
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-9)
    return a == b


def _assert_rows(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert set(g) == set(e)
        for k in e:
            assert _same(g[k], e[k]), (k, g, e)


def _forward_test_split(cfg, ckpt):
    """Per task, scores and targets of the test split, one sample per forward call (no evaluation code)."""
    from medzoo.data.collate import collate
    from medzoo.train.config import load_run_config
    from medzoo.train.data import build_datasets
    from medzoo.zoo.checkpoint import model_from_checkpoint

    run = load_run_config(cfg)
    model = model_from_checkpoint(ckpt)[0].eval()
    out = {"findings": ([], []), "covid_ct": ([], []), "slices": ([], []), "ids": [], "patients": {}}
    with torch.no_grad():
        for bundle in build_datasets(run, model):
            ds = bundle.splits["test"]
            for i in range(len(ds)):
                sample = ds[i]
                batch = collate([sample])
                x = batch["image"]
                out["patients"].setdefault(bundle.name, []).append((bundle.config.kind, sample["meta"]["patient_id"]))
                if bundle.name == "nih":
                    out["findings"][0].append(model(x, tasks=["findings"])["findings"].sigmoid()[0].numpy())
                    out["findings"][1].append(batch["label.findings"][0].numpy())
                else:
                    out["covid_ct"][0].append(model(x, tasks=["covid_ct"])["covid_ct"].softmax(-1)[0].numpy())
                    out["covid_ct"][1].append(float(batch["label.covid"][0]))
                    sid = sample["meta"]["id"]
                    out["ids"].append(sid)
                    pad = torch.zeros(x.shape[:2], dtype=torch.bool)
                    sl = model.slice_logits(x, pad, tasks=["covid_ct"])["covid_ct"][0].softmax(-1).numpy()
                    out["slices"][0].append(sl)
                    out["slices"][1].extend(bundle.slice_labels[sid])
                    out["patients"].setdefault("slices", []).extend([out["patients"][bundle.name][-1]] * len(sl))
    return out


def test_bootstrap_tables_equal_the_library_on_independent_scores(trained, single):
    cfg, ckpt = trained
    ref = _forward_test_split(cfg, ckpt)
    from tests.train.train_fixtures import CXR14

    s, t = np.stack(ref["findings"][0]), np.stack(ref["findings"][1])
    table = _load(single / "findings_auroc_ci.json")
    _assert_rows(table, auroc_ci_table(s, t, CXR14, n_boot=N_BOOT, seed=0, groups=ref["patients"]["nih"]))
    assert [r["label"] for r in table] == [*CXR14, "Mean"]
    assert table[0]["n_units"] == len(set(ref["patients"]["nih"])) < len(s)  # NIH: several images per patient
    md = (single / "findings_auroc_ci.md").read_text().splitlines()
    assert md[0] == "| Pathology | AUROC (95% CI) |"
    assert len(md) == 2 + 15 + 2
    assert md[-1].startswith(f"95% CIs: percentile bootstrap over {table[0]['n_units']} patients")

    from medzoo.data.synth.ct import COVIDX_CT_CLASSES

    classes = ["normal", "pneumonia", "covid19"]  # the head's classes: the dataset's (raw slice labels) in order
    assert [c.lower().replace("-", "") for c in COVIDX_CT_CLASSES] == classes
    pp, pt = np.stack(ref["covid_ct"][0]), np.array(ref["covid_ct"][1])
    by_series = covidx_ct_tables(ref["patients"]["covidx_ct"], pp, pt, classes, n_boot=N_BOOT, seed=0)
    _assert_rows(_load(single / "covid_ct_patient.json"), by_series["patient"])
    _assert_rows(_load(single / "covid_ct_series.json"), by_series["slice"])  # one row per scan
    sp, st = np.concatenate(ref["slices"][0]), np.array(ref["slices"][1], dtype=float)
    slice_rows = _load(single / "covid_ct_slice.json")
    _assert_rows(slice_rows, covidx_ct_tables(ref["patients"]["slices"], sp, st, classes, n_boot=N_BOOT,
                                              seed=0)["slice"])
    assert slice_rows[-1]["n"] == len(sp) > len(pp)
    metrics = _load(single / "metrics.json")
    assert _same(metrics["test/findings/mean_auroc"], table[-1]["auroc"])
    assert _same(metrics["test/covid_ct/slice/accuracy"], slice_rows[-1]["accuracy"])


def test_bootstrap_unit_image_resamples_images(trained, tmp_path, capsys):
    cfg, ckpt = trained
    assert main(["evaluate", "-c", str(cfg), "--checkpoint", str(ckpt), "--bootstrap", str(N_BOOT),
                 "--bootstrap-unit", "image", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    ref = _forward_test_split(cfg, ckpt)
    from tests.train.train_fixtures import CXR14

    s, t = np.stack(ref["findings"][0]), np.stack(ref["findings"][1])
    _assert_rows(_load(tmp_path / "findings_auroc_ci.json"), auroc_ci_table(s, t, CXR14, n_boot=N_BOOT, seed=0))
    assert {r["bootstrap_unit"] for r in _load(tmp_path / "covid_ct_slice.json")} == {"image"}


def test_localization_rows_for_every_boxed_image(trained, single):
    cfg, ckpt = trained
    root = _corpus_root(cfg) / "nih"
    boxed = [r for r in open_dataset("nih-cxr14", root) if r.meta.get("boxes")]
    expected = {(r.id, b["label"]) for r in boxed for b in r.meta["boxes"]}
    rows = _load(single / "localization.json")
    assert len(boxed) > 0
    assert {(r["id"], r["label"]) for r in rows} == expected
    summary = _load(single / "localization_summary.json")
    assert summary[-1]["label"] == "all"
    assert summary[-1]["n"] == len(rows)
    assert {"acc@0.1", "acc@0.5", "acc@0.9", "pointing", "iou@10", "dice@50"} <= set(summary[-1])
    # one row again by hand: Grad-CAM heatmap, the 1024-px NIH box scaled to the PNG, the localisation scores
    from medzoo.zoo.checkpoint import model_from_checkpoint

    rec = next(r for r in boxed if r.id == rows[0]["id"])
    box = next(b["box"] for b in rec.meta["boxes"] if b["label"] == rows[0]["label"])
    heat = model_heatmap_fn(model_from_checkpoint(ckpt)[0].eval(), "findings", "gradcam",
                            {"modality": "CXR", "axes": "HW", "rescale": "max_value", "input_size": [32, 32],
                             "size_mode": "resize", "resize": "linear"})(rec, rows[0]["label"])
    mask = box_to_mask(box, heat.shape, scale=(heat.shape[1] / 1024, heat.shape[0] / 1024))
    for k, v in localization_scores(heat, mask, ks=(5, 10, 20, 50), normalize=True).items():
        assert _same(rows[0][k], v), k


def test_ensemble_of_one_checkpoint_twice_equals_the_single_model(trained, single, tmp_path, capsys):
    cfg, ckpt = trained
    code = main(["evaluate", "-c", str(cfg), "--model", str(ckpt), "--model", str(ckpt),
                           "--bootstrap", str(N_BOOT), "--out", str(tmp_path)])
    assert code == 0
    capsys.readouterr()
    one, two = _load(single / "metrics.json"), _load(tmp_path / "metrics.json")
    assert set(two) == set(one) - {"test/loss"}
    for key, value in two.items():
        assert _same(value, one[key]), key
    for name in ("findings_auroc_ci", "covid_ct_patient", "covid_ct_series", "covid_ct_slice"):
        _assert_rows(_load(tmp_path / f"{name}.json"), _load(single / f"{name}.json"))


def _pred(task, kind, labels, scores, targets, ids=("a", "b", "c")):
    n = len(ids)
    return TaskPredictions(task, kind, tuple(labels), np.asarray(scores, float), np.asarray(targets, float),
                           list(ids), list(ids), ["x"] * n)


def test_ensemble_predictions_average_common_labels():
    a = {"cls": _pred("cls", "class", ["x", "y", "z"], [[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]],
                      [1, 2, 0]),
         "ml": _pred("ml", "vector", ["p", "q"], [[0.1, 0.9], [0.4, 0.3], [0.7, 0.2]], [[0, 1], [1, 0], [1, 1]]),
         "only_a": _pred("only_a", "regression", ["v"], [[1], [2], [3]], [[1], [2], [3]])}
    b = {"cls": _pred("cls", "class", ["y", "x"], [[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]], [0, 1, 1]),
         "ml": _pred("ml", "vector", ["q", "p"], [[0.5, 0.3], [0.1, 0.2], [0.6, 0.6]], [[1, 0], [0, 1], [1, 1]])}
    out = ensemble_predictions([a, b])
    assert set(out) == {"cls", "ml"}
    assert out["ml"].labels == ("p", "q")
    np.testing.assert_allclose(out["ml"].scores, (a["ml"].scores + b["ml"].scores[:, ::-1]) / 2)
    mean = (a["cls"].scores[:, :2] + b["cls"].scores[:, ::-1]) / 2
    np.testing.assert_allclose(out["cls"].scores, mean / mean.sum(1, keepdims=True))
    np.testing.assert_array_equal(out["cls"].targets, [1, np.nan, 0])  # class z is not in the ensemble
    with pytest.raises(EnsembleError, match="share no task"):
        ensemble_predictions([{"only_a": a["only_a"]}, b])
    other = {"ml": _pred("ml", "vector", ["p", "q"], [[0.1, 0.9], [0.4, 0.3]], [[0, 1], [1, 0]], ids=("a", "d"))}
    with pytest.raises(ValueError, match="other samples"):
        ensemble_predictions([a, other])


def test_option_errors_are_one_line(trained, capsys):
    cfg, ckpt = trained
    assert main(["evaluate", "-c", str(cfg), "--model", str(ckpt), "--localization", "nih-cxr14"]) == 2
    assert "--localization-root" in capsys.readouterr().err
    assert main(["evaluate", "-c", str(cfg), "--model", str(ckpt), "--bootstrap", "-1"]) == 2
    assert "--bootstrap must be >= 0" in capsys.readouterr().err
