"""The harmonised CXR vocabulary and relabel(): explicit synonyms, NaN (never 0) for labels a dataset lacks."""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.data import CXR_VOCABULARY, Manifest, Record, canonical_label, open_dataset, relabel
from medzoo.data.readers.chexpert import CHEXPERT_LABELS
from medzoo.data.readers.nih import NIH_LABELS
from medzoo.data.readers.vindr import VINDR_LABELS


@pytest.mark.parametrize("name,canon", [
    ("Pleural_Thickening", "Pleural Thickening"), ("Pleural thickening", "Pleural Thickening"),
    ("Effusion", "Effusion"), ("Pleural Effusion", "Effusion"), ("pleural effusion", "Effusion"),
    ("Infiltrate", "Infiltration"), ("infiltrates", "Infiltration"), ("Pulmonary fibrosis", "Fibrosis"),
    ("No finding", "No Finding"), ("normal", "No Finding"), ("Aortic enlargement", "Aortic Enlargement"),
    ("hiatal hernia", "Hernia"), ("Nodule/Mass", "Nodule/Mass"), ("Tuberculosis", None), ("", None),
])
def test_synonyms(name, canon):
    assert canonical_label(name) == canon


def test_vocabulary_covers_every_reader_label():
    assert len(CXR_VOCABULARY) == len(set(CXR_VOCABULARY))
    assert CXR_VOCABULARY[:14] == [canonical_label(n) for n in NIH_LABELS]
    for name in NIH_LABELS + CHEXPERT_LABELS + VINDR_LABELS + ["No finding"]:
        assert canonical_label(name) in CXR_VOCABULARY, name


def vocab(**values: float) -> np.ndarray:
    """A vector over CXR_VOCABULARY: the given values (keys with '_' for ' ' and '/'), NaN elsewhere."""
    names = {v.replace(" ", "_").replace("/", "_"): v for v in CXR_VOCABULARY}
    out = np.full(len(CXR_VOCABULARY), np.nan, dtype=np.float32)
    for key, value in values.items():
        out[CXR_VOCABULARY.index(names[key])] = value
    return out


def nih_vec(*positives: str) -> np.ndarray:
    """NIH: its 14 findings 0/1, Nodule/Mass = Nodule or Mass, No Finding = none of the 14."""
    values = {canonical_label(n).replace(" ", "_"): float(canonical_label(n) in positives) for n in NIH_LABELS}
    values["Nodule_Mass"] = float("Nodule" in positives or "Mass" in positives)
    return vocab(**values, No_Finding=float(not positives))


NIH_EXPECTED = {
    "00000001_000.png": nih_vec("Cardiomegaly"),
    "00000001_001.png": nih_vec("Cardiomegaly", "Emphysema"),
    "00000002_000.png": nih_vec(),
    "00000003_000.png": nih_vec("Hernia", "Pleural Thickening"),
    "00000004_000.png": nih_vec("Effusion", "Infiltration", "Mass"),
}


@pytest.mark.parametrize("image", sorted(NIH_EXPECTED))
def test_relabel_nih_encodes_no_finding_and_the_union(ds, image):
    m = relabel(open_dataset("nih-cxr14", ds.nih()), CXR_VOCABULARY)
    got = {r.id: r.labels["findings"] for r in m}[image]
    np.testing.assert_array_equal(got, NIH_EXPECTED[image])


def vindr_vec(*positives: str) -> np.ndarray:
    """VinDr: its 14 local labels 0/1, Nodule and Mass 0 where Nodule/Mass is 0, No Finding = none of the 14."""
    values = {canonical_label(n).replace(" ", "_").replace("/", "_"): float(n in positives) for n in VINDR_LABELS}
    if "Nodule/Mass" not in positives:
        values.update(Nodule=0.0, Mass=0.0)
    return vocab(**values, No_Finding=float(not positives))


@pytest.mark.parametrize("consensus,want", [
    ("any", [vindr_vec(), vindr_vec("Aortic enlargement", "Cardiomegaly")]),
    ("majority", [vindr_vec(), vindr_vec("Cardiomegaly")]),
    ("all", [vindr_vec(), vindr_vec()]),
])
def test_relabel_vindr_encodes_no_finding_per_consensus(ds, consensus, want):
    m = relabel(open_dataset("vindr-cxr", ds.vindr(), consensus=consensus), CXR_VOCABULARY)
    np.testing.assert_array_equal(np.stack([r.labels["findings"] for r in m]), np.stack(want))


def test_relabel_chexpert_keeps_its_own_no_finding(ds):
    chex = relabel(open_dataset("chexpert", ds.chexpert(), uncertainty="u-ones", views="*"), CXR_VOCABULARY)
    want = vocab(Enlarged_Cardiomediastinum=0, Cardiomegaly=1, Lung_Opacity=1, Lung_Lesion=0, Edema=1,
                 Consolidation=1, Pneumonia=0, Atelectasis=1, Pneumothorax=0, Effusion=1, Pleural_Other=0,
                 Fracture=1, Support_Devices=0, No_Finding=0)
    np.testing.assert_array_equal(chex[1].labels["findings"], want)  # patient00002 frontal, uncertain -> 1


def test_relabel_keeps_order_other_tasks_and_input():
    rec = Record("a", "p", "a.png", {"findings": np.array([1, 0, np.nan], dtype=np.float32), "tb": 1}, {"k": 1})
    m = Manifest("x", ".", [rec], {"findings": ["Pleural_Thickening", "Effusion", "Mass"], "tb": ["n", "y"]},
                 split="train")
    out = relabel(m, ["Mass", "Pleural Effusion", "Edema", "Pleural Thickening"])
    np.testing.assert_array_equal(out[0].labels["findings"], np.array([np.nan, 0, np.nan, 1], dtype=np.float32))
    assert out.label_names == {"findings": ["Mass", "Pleural Effusion", "Edema", "Pleural Thickening"],
                               "tb": ["n", "y"]}
    assert out[0].labels["tb"] == 1
    assert out[0].meta == {"k": 1}
    assert out.split == "train"
    np.testing.assert_array_equal(m[0].labels["findings"], [1, 0, np.nan])  # input untouched


def test_relabel_combines_synonyms_and_reports_unmapped():
    recs = [Record(str(k), "p", "a.png", {"findings": np.array(v, dtype=np.float32)})
            for k, v in enumerate([[1, 0, 0], [0, 0, 1], [np.nan, 0, 0], [np.nan, 1, 1], [np.nan, np.nan, 1]])]
    m = Manifest("x", ".", recs, {"findings": ["Effusion", "pleural effusion", "Tuberculosis"]})
    out = relabel(m, ["Effusion"])
    # 1 if any is 1; 0 only if all are 0; an unknown next to a 0 stays unknown
    np.testing.assert_array_equal([float(r.labels["findings"][0]) for r in out], [1.0, 0.0, np.nan, 1.0, np.nan])
    with pytest.raises(ValueError, match=r"labels \['Tuberculosis'\] have no place in the vocabulary"):
        relabel(m, ["Effusion"], unmapped="error")
    with pytest.raises(KeyError, match="has no task 'severity'"):
        relabel(m, ["Effusion"], task="severity")
