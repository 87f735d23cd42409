"""Patient-level splits: determinism, disjointness, stratification, official splits; the leakage guard."""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.data import Manifest, Record, check_leakage, open_dataset, patient_split
from tests.data.dataset_fixtures import write_lines


def synthetic(n_patients: int = 100, per_patient: int = 3, positives: int = 20) -> Manifest:
    """``per_patient`` records per patient; the first ``positives`` patients have tb = 1."""
    recs = []
    for p in range(n_patients):
        for k in range(per_patient):
            y = np.array([p % 3 == 0, p % 7 == 0], dtype=np.float32)
            recs.append(Record(f"p{p:03d}_{k}", f"p{p:03d}", f"/x/{p}_{k}.png",
                               {"tb": int(p < positives), "findings": y, "severity": np.array([p % 9, 1.0])}))
    return Manifest("demo", "/x", recs, {"tb": ["normal", "tb"], "findings": ["a", "b"],
                                         "severity": ["geographic", "opacity"]})


def ids(parts):
    return {k: [r.id for r in m] for k, m in parts.items()}


def test_deterministic_and_seed_dependent():
    m = synthetic()
    a, b = patient_split(m, seed=3), patient_split(m, seed=3)
    assert ids(a) == ids(b)
    assert ids(patient_split(m, seed=4)) != ids(a)


@pytest.mark.parametrize("stratify", [None, "tb", "findings", "severity"])
def test_patient_disjoint_and_complete(stratify):
    m = synthetic()
    parts = patient_split(m, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, stratify=stratify)
    pats = {k: {r.patient_id for r in v} for k, v in parts.items()}
    assert not (pats["train"] & pats["val"])
    assert not (pats["train"] & pats["test"])
    assert not (pats["val"] & pats["test"])
    assert sorted(r.id for v in parts.values() for r in v) == sorted(r.id for r in m)
    assert [len(pats[k]) for k in ("train", "val", "test")] == [60, 20, 20]
    assert all(v.split == k for k, v in parts.items())
    check_leakage(parts)
    for v in parts.values():  # records keep file order
        order = [r.id for r in v]
        assert order == sorted(order)


def test_stratified_class_proportions():
    parts = patient_split(synthetic(), seed=5, stratify="tb")  # 0.7 / 0.1 / 0.2 of 20 positive patients
    positives = {k: len({r.patient_id for r in v if r.labels["tb"] == 1}) for k, v in parts.items()}
    assert positives == {"train": 14, "val": 2, "test": 4}
    unstratified = [patient_split(synthetic(), seed=s) for s in range(10)]
    counts = [len({r.patient_id for r in p["test"] if r.labels["tb"] == 1}) for p in unstratified]
    assert len(set(counts)) > 1  # without stratification the count varies with the seed


def test_bad_arguments():
    m = synthetic(10)
    with pytest.raises(ValueError, match="sum to 1"):
        patient_split(m, {"train": 0.5, "val": 0.1, "test": 0.1})
    with pytest.raises(ValueError, match="keys must be among"):
        patient_split(m, {"train": 0.8, "holdout": 0.2})
    with pytest.raises(ValueError, match="cannot stratify on 'covid'"):
        patient_split(m, stratify="covid")


def test_nih_official_split(ds):
    root = ds.nih()
    parts = patient_split(open_dataset("nih-cxr14", root), seed=0)
    assert [r.id for r in parts["test"]] == ["00000003_000.png"]  # test_list.txt, kept
    pool = sorted(r.id for r in parts["train"]) + sorted(r.id for r in parts["val"])
    assert sorted(pool) == ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000004_000.png"]
    assert {r.patient_id for r in parts["train"]}.isdisjoint({r.patient_id for r in parts["val"]})
    random = patient_split(open_dataset("nih-cxr14", root), seed=0, official=False)
    check_leakage(random)
    pool_only = patient_split(open_dataset("nih-cxr14", root, split="train_val"), seed=0)  # test carved too
    assert {k: len({r.patient_id for r in v}) for k, v in pool_only.items()} == {"train": 2, "val": 0, "test": 1}


def test_official_lists_that_leak_are_refused(ds):
    root = ds.nih()
    write_lines(root / "test_list.txt", ["00000003_000.png", "00000001_001.png"])
    write_lines(root / "train_val_list.txt", ["00000001_000.png", "00000002_000.png", "00000004_000.png"])
    m = open_dataset("nih-cxr14", root)
    with pytest.raises(ValueError, match=r"patient leakage: 1 patient\(s\) in both '(train|val)' and 'test': 1$"):
        patient_split(m)


def test_chexpert_valid_becomes_test_and_covidx_ct_keeps_its_three(ds):
    parts = patient_split(open_dataset("chexpert", ds.chexpert(), views="*"), seed=0)
    assert [r.patient_id for r in parts["test"]] == ["patient64541"]
    assert len(parts["train"]) + len(parts["val"]) == 3
    ct = patient_split(open_dataset("covidx-ct", ds.covidx_ct()), seed=0)
    assert {k: len(v) for k, v in ct.items()} == {"train": 4, "val": 1, "test": 2}


def test_check_leakage_names_ids_and_splits():
    def man(split, pats, kind="x"):
        return Manifest(kind, ".", [Record(f"{split}{p}", p, f"{p}.png") for p in pats], split=split)

    check_leakage(man("train", ["a", "b"]), man("test", ["c"]))
    with pytest.raises(ValueError, match=r"2 patient\(s\) in both 'train' and 'val': a, b"):
        check_leakage(man("train", ["a", "b", "z"]), man("val", ["b", "a"]), man("test", ["c"]))
    with pytest.raises(ValueError, match="in both 'val' and 'test': c"):
        check_leakage({"train": man(None, ["a"]), "val": man(None, ["c"]), "test": man(None, ["c"])})
    check_leakage(man("train", ["a"]), man("test", ["a"], kind="other"))  # other dataset: not the same patient
    many = [f"p{i:02d}" for i in range(12)]
    with pytest.raises(ValueError, match=r"12 patient\(s\) .*p09 \(and 2 more\)"):
        check_leakage(man("train", many), man("test", many))
