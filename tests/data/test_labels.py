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


def test_relabel_nih_and_chexpert_into_one_vocabulary(ds):
    nih = relabel(open_dataset("nih-cxr14", ds.nih()), CXR_VOCABULARY)
    chex = relabel(open_dataset("chexpert", ds.chexpert(), uncertainty="u-ones"), CXR_VOCABULARY)
    assert nih.label_names["findings"] == chex.label_names["findings"] == CXR_VOCABULARY
    i = {name: k for k, name in enumerate(CXR_VOCABULARY)}
    v = {r.id: r.labels["findings"] for r in nih}["00000004_000.png"]  # Effusion|Infiltration|Mass
    assert v.shape == (len(CXR_VOCABULARY),)
    assert v[i["Effusion"]] == 1 and v[i["Infiltration"]] == 1 and v[i["Mass"]] == 1 and v[i["Cardiomegaly"]] == 0
    for lacking in ("Support Devices", "Lung Opacity", "No Finding", "Aortic Enlargement", "Nodule/Mass"):
        assert np.isnan(v[i[lacking]]), lacking  # NIH does not label these: NaN, never 0
    w = chex[1].labels["findings"]  # patient00002: Pleural Effusion uncertain -> 1 under u-ones
    assert w[i["Effusion"]] == 1 and w[i["Fracture"]] == 1 and w[i["Lung Opacity"]] == 1
    for lacking in ("Infiltration", "Mass", "Nodule", "Emphysema", "Hernia", "Fibrosis", "Pleural Thickening"):
        assert np.isnan(w[i[lacking]]), lacking


def test_relabel_keeps_order_other_tasks_and_input():
    rec = Record("a", "p", "a.png", {"findings": np.array([1, 0, np.nan], dtype=np.float32), "tb": 1}, {"k": 1})
    m = Manifest("x", ".", [rec], {"findings": ["Pleural_Thickening", "Effusion", "Mass"], "tb": ["n", "y"]},
                 split="train")
    out = relabel(m, ["Mass", "Pleural Effusion", "Edema", "Pleural Thickening"])
    np.testing.assert_array_equal(out[0].labels["findings"], np.array([np.nan, 0, np.nan, 1], dtype=np.float32))
    assert out.label_names == {"findings": ["Mass", "Pleural Effusion", "Edema", "Pleural Thickening"],
                               "tb": ["n", "y"]}
    assert out[0].labels["tb"] == 1 and out[0].meta == {"k": 1} and out.split == "train"
    np.testing.assert_array_equal(m[0].labels["findings"], [1, 0, np.nan])  # input untouched


def test_relabel_combines_synonyms_and_reports_unmapped():
    recs = [Record(str(k), "p", "a.png", {"findings": np.array(v, dtype=np.float32)})
            for k, v in enumerate([[1, 0, 0], [0, 0, 1], [np.nan, 0, 0], [np.nan, np.nan, 1]])]
    m = Manifest("x", ".", recs, {"findings": ["Effusion", "pleural effusion", "Tuberculosis"]})
    out = relabel(m, ["Effusion"])
    assert [float(r.labels["findings"][0]) for r in out][:3] == [1.0, 0.0, 0.0]
    assert np.isnan(out[3].labels["findings"][0])
    with pytest.raises(ValueError, match=r"labels \['Tuberculosis'\] have no place in the vocabulary"):
        relabel(m, ["Effusion"], unmapped="error")
    with pytest.raises(KeyError, match="has no task 'severity'"):
        relabel(m, ["Effusion"], task="severity")
