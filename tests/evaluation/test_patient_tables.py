"""Patient-level statistics: the bootstrap unit of every table, COVIDx-CT series grouped by patient, and patient ids
carried from the readers to the evaluation predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from medzoo.data.imageio import write_png
from medzoo.evaluation.checkpoint import evaluate_checkpoint
from medzoo.evaluation.chexnet import format_chexnet_table
from medzoo.evaluation.tables import auroc_ci_table, bootstrap_tables, covidx_ct_tables, patient_keys
from medzoo.metrics import auroc_bootstrap_ci
from medzoo.models.factory import create_model
from medzoo.train.evaluate import TaskPredictions
from tests.helpers import pair_auc
from tests.train.train_fixtures import DATA, TASKS, WIDTHS

CLASSES = ("normal", "pneumonia", "covid19")


def _series_predictions() -> TaskPredictions:
    """8 scans of 5 patients (COVIDx-CT ids as the reader merges them); scan 1 and 2 are one patient's."""
    rng = np.random.default_rng(4)
    ids = ["NCP_341_1834", "NCP_341_1835", "Normal_12_100", "CP_5_200", "137covid_patient9_SR_3",
           "137covid_patient9_SR_4", "normal2_patient3_SR_1", "CP_8_301"]
    patients = ["NCP_341", "NCP_341", "Normal_12", "CP_5", "COVID-CTset_patient9", "COVID-CTset_patient9",
                "COVID-CTset_patient3", "CP_8"]
    targets = np.array([2, 2, 0, 1, 2, 2, 0, 1], dtype=float)
    scores = rng.dirichlet(np.ones(3), size=8)
    n_slices = [3, 2, 4, 2, 3, 3, 2, 2]
    slice_series = [s for s, n in zip(ids, n_slices) for _ in range(n)]
    slice_targets = np.repeat(targets, n_slices)
    return TaskPredictions("covid_ct", "class", CLASSES, scores, targets, ids, patients, ["covidx-ct"] * 8,
                           rng.dirichlet(np.ones(3), size=len(slice_series)), slice_targets, slice_series, "series")


def test_two_series_of_one_patient_give_one_patient_row():
    p = _series_predictions()
    tables = bootstrap_tables({"covid_ct": p}, n_boot=30, seed=0)
    assert set(tables) == {"covid_ct_slice", "covid_ct_series", "covid_ct_patient"}
    patient = tables["covid_ct_patient"]
    assert patient[-1]["n"] == 6  # 8 scans, 6 patients
    assert tables["covid_ct_series"][-1]["n"] == 8
    # by hand: mean probability over each patient's scans, argmax for the class
    order = list(dict.fromkeys(p.patients))
    probs = np.array([p.scores[[i for i, q in enumerate(p.patients) if q == pid]].mean(axis=0) for pid in order])
    y = np.array([p.targets[p.patients.index(pid)] for pid in order])
    assert patient[-1]["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == y))
    for k, row in enumerate(patient[:3]):
        assert row["auroc"] == pytest.approx(pair_auc(probs[:, k], (y == k).astype(float)))
        assert row["bootstrap_unit"] == "patient"


def test_series_tables_resample_patients_or_their_own_rows():
    p = _series_predictions()
    by_patient = bootstrap_tables({"covid_ct": p}, n_boot=30, seed=0)
    by_image = bootstrap_tables({"covid_ct": p}, n_boot=30, seed=0, unit="image")
    assert [by_patient[f"covid_ct_{lvl}"][-1]["n_units"] for lvl in ("slice", "series", "patient")] == [6, 6, 6]
    assert [by_image[f"covid_ct_{lvl}"][-1]["n_units"] for lvl in ("slice", "series", "patient")] == [21, 8, 6]
    assert [by_image[f"covid_ct_{lvl}"][-1]["bootstrap_unit"] for lvl in ("slice", "series", "patient")] == [
        "image", "series", "patient"]
    # the series table's CI: the cluster bootstrap over the scans' patients
    keys = patient_keys(p.patients, p.datasets)
    one_hot = np.eye(3)[p.targets.astype(int)]
    ci = auroc_bootstrap_ci(p.scores, one_hot, n_boot=30, seed=0, groups=keys)
    assert by_patient["covid_ct_series"][2]["ci_lower"] == pytest.approx(ci.lower[2])


def test_series_of_one_patient_with_different_classes_is_an_error():
    p = _series_predictions()
    p.targets[1] = 0.0  # NCP_341's second scan now says normal
    with pytest.raises(ValueError, match="covid_ct.*NCP_341"):
        bootstrap_tables({"covid_ct": p}, n_boot=5)


def test_patients_of_two_datasets_never_merge_and_every_table_names_its_unit():
    rng = np.random.default_rng(0)
    patients = ["7", "7", "8", "7", "9", "9"]
    datasets = ["nih-cxr14", "nih-cxr14", "nih-cxr14", "chexpert", "chexpert", "chexpert"]
    findings = TaskPredictions("findings", "vector", ("Effusion", "Mass"), rng.random((6, 2)),
                               np.array([[0, 1], [1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], dtype=float),
                               [f"i{i}" for i in range(6)], patients, datasets)
    tb = TaskPredictions("tb", "class", ("normal", "tb"), rng.dirichlet([1, 1], size=6),
                         np.array([0, 1, 0, 1, 1, 0], dtype=float), [f"t{i}" for i in range(6)], patients, datasets)
    tables = bootstrap_tables({"findings": findings, "tb": tb, "covid_ct": _series_predictions()}, n_boot=20)
    assert tables["findings_auroc_ci"][0]["n_units"] == 4  # (nih, 7), (nih, 8), (chexpert, 7), (chexpert, 9)
    expected = auroc_bootstrap_ci(findings.scores, findings.targets, n_boot=20,
                                  groups=list(zip(datasets, patients)))
    assert tables["findings_auroc_ci"][0]["ci_upper"] == pytest.approx(expected.upper[0])
    for name, rows in tables.items():
        for row in rows:
            assert row["bootstrap_unit"] == "patient", name
    rows = bootstrap_tables({"findings": findings}, n_boot=20, unit="image")["findings_auroc_ci"]
    assert {(r["bootstrap_unit"], r["n_units"]) for r in rows} == {("image", 6)}
    with pytest.raises(ValueError, match="bootstrap unit"):
        bootstrap_tables({"findings": findings}, n_boot=5, unit="study")


def test_slice_model_tables_cluster_slices_by_patient():
    pids = ["p1", "p1", "p2", "p2", "p2", "p3", "p4", "p4"]
    probs = np.random.default_rng(1).dirichlet(np.ones(3), size=8)
    y = np.array([0, 0, 2, 2, 2, 1, 2, 2], dtype=float)
    tables = covidx_ct_tables(pids, probs, y, CLASSES, n_boot=25, seed=2)
    ci = auroc_bootstrap_ci(probs, np.eye(3)[y.astype(int)], n_boot=25, seed=2, groups=pids)
    assert tables["slice"][0]["ci_lower"] == pytest.approx(ci.lower[0])
    assert (tables["slice"][-1]["bootstrap_unit"], tables["slice"][-1]["n_units"]) == ("patient", 4)
    assert (tables["patient"][-1]["n"], tables["patient"][-1]["bootstrap_unit"]) == (4, "patient")
    flat = covidx_ct_tables(pids, probs, y, CLASSES, n_boot=25, seed=2, unit="image")["slice"]
    assert (flat[-1]["bootstrap_unit"], flat[-1]["n_units"]) == ("image", 8)


def test_chexnet_markdown_names_the_bootstrap_unit():
    rows = auroc_ci_table(np.array([0.1, 0.4, 0.35, 0.8, 0.7]), np.array([0, 0, 1, 1, 1]), ["Mass"], n_boot=10,
                          groups=["a", "a", "b", "c", "c"])
    lines = format_chexnet_table(rows).splitlines()
    assert lines[0] == "| Pathology | AUROC (95% CI) |"
    assert lines[-1] == "95% CIs: percentile bootstrap over 3 patients (each drawn patient brings all of its images)."
    rows = auroc_ci_table(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]), ["Mass"], n_boot=10)
    assert format_chexnet_table(rows).splitlines()[-1].startswith("95% CIs: percentile bootstrap over 4 images")


# ------------------------------------------------------------------------------------- ids from the readers
def _covidx_ct_folder(root):
    """A COVIDx-CT test split in the real line layout: COVID-CTset patient 9 and CNCB patient 341 with two scans
    each, two other patients with one."""
    scans = {"137covid_patient9_SR_3": 2, "137covid_patient9_SR_4": 2, "NCP_341_1834": 2, "NCP_341_1835": 2,
             "Normal_12_100": 0, "CP_5_200": 1}
    rng = np.random.default_rng(0)
    lines = []
    for scan, cls in scans.items():
        for k in range(3):
            name = f"{scan}_IM{k:05d}.png" if "_SR_" in scan else f"{scan}_{k:04d}.png"
            write_png(root / "2A_images" / name, (rng.random((40, 40)) * 255).astype(np.uint8))
            lines.append(f"{name} {cls} 0 0 40 40")
    (root / "test_COVIDx_CT-2A.txt").write_text("\n".join(lines) + "\n")
    return root


def test_patient_ids_reach_the_evaluation_predictions_and_the_patient_table(tmp_path):
    _covidx_ct_folder(tmp_path / "data" / "covidx-ct")
    model_cfg = {"encoder": {"name": "resnet10", "widths": WIDTHS}, "tasks": {"covid_ct": TASKS["covid_ct"]},
                 "aggregator": {"name": "attention", "options": {"hidden_features": 16}}}
    data = {**DATA["covidx_ct"], "split": {"official": True}}
    run = {"data_root": str(tmp_path / "data"), "model": model_cfg, "data": [data],
           "train": {"device": "cpu", "seed": 0}, "output": {"dir": str(tmp_path / "run"), "tensorboard": False}}
    torch.manual_seed(0)
    model = create_model(model_cfg)
    ckpt = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "config": yaml.safe_dump(run)}, ckpt)
    _, preds = evaluate_checkpoint(run, ckpt, "test", return_predictions=True)
    p = preds["covid_ct"]
    got = dict(zip(p.ids, p.patients))
    assert got == {"137covid_patient9_SR_3": "COVID-CTset_patient9", "137covid_patient9_SR_4": "COVID-CTset_patient9",
                   "NCP_341_1834": "NCP_341", "NCP_341_1835": "NCP_341", "Normal_12_100": "Normal_12",
                   "CP_5_200": "CP_5"}
    tables = bootstrap_tables(preds, n_boot=10)
    assert tables["covid_ct_series"][-1]["n"] == 6
    assert tables["covid_ct_patient"][-1]["n"] == 4
    assert not math.isnan(tables["covid_ct_patient"][-1]["accuracy"])


def test_chexnet_table_resamples_the_patients_of_the_test_list(tmp_path):
    from medzoo.data import open_dataset
    from medzoo.data.synth import write_synthetic_corpus
    from medzoo.evaluation.chexnet import chexnet_table
    from medzoo.train.config import load_run_config
    from tests.train.train_fixtures import run_config

    write_synthetic_corpus(tmp_path / "corpus", seed=0, size="tiny", dicom=False)
    cfg = run_config(tmp_path / "corpus", tmp_path / "run", ["nih"])
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    torch.save({"model": create_model(cfg["model"]).state_dict(), "config": yaml.safe_dump(cfg)}, ckpt)
    test_ids = (tmp_path / "corpus" / "nih" / "test_list.txt").read_text().split()
    patient = {r.id: r.patient_id for r in open_dataset("nih-cxr14", tmp_path / "corpus" / "nih")}
    expected = {patient[i] for i in test_ids}
    assert len(expected) < len(test_ids)  # several test images per patient
    rows = chexnet_table(load_run_config(cfg), ckpt, n_boot=10)
    assert {(r["bootstrap_unit"], r["n_units"]) for r in rows} == {("patient", len(expected))}
    rows = chexnet_table(load_run_config(cfg), ckpt, n_boot=10, unit="image")
    assert {(r["bootstrap_unit"], r["n_units"]) for r in rows} == {("image", len(test_ids))}
