"""PadChest label semantics: the 193-term table, hyponyms -> parents, ``normal``, partial readings, views.

Rows use the release's column layout (quoted report text with commas) and its real term strings. Expected vectors
are written out by hand from PadChest's taxonomy; TorchXRayVision's positives for the hyponyms come from its
substring-plus-synonym matching (``PC_Dataset`` counts each hyponym below for its parent).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medzoo.data import CXR_VOCABULARY, DatasetFormatError, open_dataset, relabel
from medzoo.data.padchest_terms import PADCHEST_LABELS, PADCHEST_TERMS, padchest_vocabulary
from tests.data.label_fixtures import padchest_line, write_padchest

n = np.nan
# Vocabulary names PadChest terms map to; every other name stays NaN for PadChest.
MAPPED = {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
          "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural Thickening", "Hernia", "Fracture",
          "Support Devices", "Nodule/Mass", "No Finding"}


def cxr(*positives: str, complete: bool = True) -> np.ndarray:
    """The expected harmonised vector: 1 for ``positives``, 0 (NaN if incomplete) for other mapped names."""
    return np.array([1.0 if v in positives else (0.0 if complete else n) if v in MAPPED else n
                     for v in CXR_VOCABULARY], dtype=np.float32)


ROWS = [  # (terms, expected harmonised vector)
    (["normal"], cxr("No Finding")),
    (["loculated pleural effusion"], cxr("Effusion")),
    (["laminar atelectasis", "cardiomegaly"], cxr("Atelectasis", "Cardiomegaly")),
    (["callus rib fracture"], cxr("Fracture")),
    (["hydropneumothorax"], cxr("Effusion", "Pneumothorax")),
    (["pulmonary mass", "multiple nodules"], cxr("Mass", "Nodule", "Nodule/Mass")),
    (["reticulonodular interstitial pattern"], cxr("Infiltration")),
    (["air bronchogram"], cxr("Consolidation", "Infiltration")),
    (["atypical pneumonia", "asbestosis signs"], cxr("Pneumonia", "Fibrosis")),
    (["pseudonodule", "pericardial effusion", "subcutaneous emphysema"], cxr()),
    (["central venous catheter via jugular vein", "calcified pleural thickening"],
     cxr("Support Devices", "Pleural Thickening")),
    (["hiatal hernia", "COPD signs"], cxr("Hernia")),
    (["unchanged"], cxr(complete=False)),
    (["exclude", "cardiomegaly"], cxr("Cardiomegaly", complete=False)),
    (None, cxr(complete=False)),
]
# Hyponyms that TorchXRayVision counts for their parent (the true ones; see the module docstring).
TXV_HYPONYMS = {
    "Effusion": ["loculated pleural effusion", "loculated fissural effusion"],
    "Atelectasis": ["laminar atelectasis", "segmental atelectasis", "lobar atelectasis", "round atelectasis",
                    "total atelectasis", "atelectasis basal"],
    "Fracture": ["rib fracture", "callus rib fracture", "clavicle fracture", "vertebral fracture", "humeral fracture"],
    "Mass": ["pulmonary mass", "mediastinal mass", "pleural mass", "soft tissue mass", "breast mass"],
    "Nodule": ["multiple nodules"],
    "Pleural Thickening": ["apical pleural thickening", "calcified pleural thickening"],
    "Pneumonia": ["atypical pneumonia"],
    "Pneumothorax": ["hydropneumothorax"],
    "Infiltration": ["interstitial pattern", "alveolar pattern", "ground glass pattern",
                     "reticular interstitial pattern", "reticulonodular interstitial pattern"],
}
# TorchXRayVision's look-alike matches that are not hyponyms: these stay 0 here.
NOT_HYPONYMS = {"pseudonodule": "Nodule", "pericardial effusion": "Effusion", "subcutaneous emphysema": "Emphysema"}


@pytest.fixture
def padchest(tmp_path):
    return write_padchest(tmp_path, [padchest_line(k, terms) for k, (terms, _) in enumerate(ROWS)])


def test_table_has_the_193_terms():
    assert len(PADCHEST_LABELS) == len(set(PADCHEST_LABELS)) == 193
    assert sum(t.kind == "finding" for t in PADCHEST_TERMS) == 174
    assert sum(t.kind == "diagnosis" for t in PADCHEST_TERMS) == 19
    for term in ("COPD signs", "NSG tube", "Chilaiditi sign", "loculated fissural effusion", "pneumoperitoneo",
                 "pectum excavatum", "dai", "double J stent", "suboptimal study"):
        assert term in PADCHEST_LABELS, term


def test_table_parents_are_terms_and_vocabulary_names():
    for t in PADCHEST_TERMS:
        assert set(t.parents) <= set(PADCHEST_LABELS), t
        assert set(t.vocabulary) <= set(CXR_VOCABULARY), t


@pytest.mark.parametrize("k", range(len(ROWS)))
def test_harmonised_vector(padchest, k):
    m = relabel(open_dataset("padchest", padchest))
    np.testing.assert_array_equal(m[k].labels["findings"], ROWS[k][1])


def test_label_space_cxr_is_the_relabelled_padchest_space(padchest):
    direct = open_dataset("padchest", padchest, label_space="cxr")
    assert direct.label_names["findings"] == CXR_VOCABULARY
    np.testing.assert_array_equal(np.stack([r.labels["findings"] for r in direct]), np.stack([v for _, v in ROWS]))


def test_padchest_space_names_and_hierarchy(padchest):
    m = open_dataset("padchest", padchest)
    assert m.label_names["findings"] == PADCHEST_LABELS
    ones = [PADCHEST_LABELS[i] for i in np.flatnonzero(m[3].labels["findings"] == 1)]  # callus rib fracture
    assert sorted(ones) == ["callus rib fracture", "fracture", "rib fracture"]
    assert int((m[3].labels["findings"] == 0).sum()) == 190
    flat = open_dataset("padchest", padchest, hierarchy=False)
    assert [PADCHEST_LABELS[i] for i in np.flatnonzero(flat[2].labels["findings"] == 1)] == [
        "cardiomegaly", "laminar atelectasis"]
    assert flat[3].meta["terms"] == ["callus rib fracture"]


def test_partial_readings_are_nan_not_zero(padchest):
    m = open_dataset("padchest", padchest)
    unchanged, excluded, blank = m[12], m[13], m[14]
    assert np.isnan(np.delete(unchanged.labels["findings"], PADCHEST_LABELS.index("unchanged"))).all()
    assert [PADCHEST_LABELS[i] for i in np.flatnonzero(excluded.labels["findings"] == 1)] == [
        "cardiomegaly", "exclude"]
    assert int(np.isnan(excluded.labels["findings"]).sum()) == 191
    assert [r.meta["complete"] for r in (unchanged, excluded, blank)] == [False, False, False]
    assert (blank.meta["labelled"], m[0].meta["labelled"]) == (False, True)


@pytest.mark.parametrize("parent,term", [(p, t) for p, ts in TXV_HYPONYMS.items() for t in ts])
def test_hyponym_sets_its_parent_like_torchxrayvision(tmp_path, parent, term):
    m = relabel(open_dataset("padchest", write_padchest(tmp_path, [padchest_line(1, [term])])))
    assert m[0].labels["findings"][CXR_VOCABULARY.index(parent)] == 1


@pytest.mark.parametrize("term,name", sorted(NOT_HYPONYMS.items()))
def test_look_alikes_are_negatives(tmp_path, term, name):
    m = relabel(open_dataset("padchest", write_padchest(tmp_path, [padchest_line(1, [term])])))
    assert m[0].labels["findings"][CXR_VOCABULARY.index(name)] == 0


def test_parent_never_zero_while_a_family_term_is_present(tmp_path):
    rows = [padchest_line(k, [t]) for k, t in enumerate(PADCHEST_LABELS)]
    m = relabel(open_dataset("padchest", write_padchest(tmp_path, rows)))
    for rec, term in zip(m, PADCHEST_LABELS):
        got = rec.labels["findings"]
        parents = set(padchest_vocabulary(term))
        parents |= {"Nodule/Mass"} if parents & {"Nodule", "Mass"} else set()  # the union of the two
        assert {CXR_VOCABULARY[i] for i in np.flatnonzero(got == 1)} == parents, term


def test_normal_sets_every_mapped_parent_to_zero(padchest):
    got = relabel(open_dataset("padchest", padchest))[0].labels["findings"]
    assert [CXR_VOCABULARY[i] for i in np.flatnonzero(got == 0)] == sorted(MAPPED - {"No Finding"},
                                                                           key=CXR_VOCABULARY.index)


def test_unknown_term_is_an_error_naming_the_line(tmp_path):
    root = write_padchest(tmp_path, [padchest_line(1, ["normal"]), padchest_line(2, ["pleural efusion"])])
    with pytest.raises(DatasetFormatError, match=r"labels_160K_01.02.19.csv:3: unknown label 'pleural efusion'"):
        open_dataset("padchest", root)


def test_term_matching_ignores_case_and_spaces(tmp_path):
    m = open_dataset("padchest", write_padchest(tmp_path, [padchest_line(1, [" Pleural Effusion", "copd signs"])]))
    assert m[0].meta["terms"] == ["pleural effusion", "COPD signs"]


def test_views_default_frontal_and_logged(tmp_path, caplog):
    rows = [padchest_line(1, ["normal"], "PA"), padchest_line(2, ["normal"], "L"),
            padchest_line(3, ["normal"], "AP_horizontal"), padchest_line(4, ["normal"], "AP")]
    root = write_padchest(tmp_path, rows)
    with caplog.at_level(logging.INFO):
        m = open_dataset("padchest", root)
    assert [r.meta["view"] for r in m] == ["PA", "AP"]
    assert "left out 2 (AP_horizontal: 1, L: 1)" in caplog.text
    assert len(open_dataset("padchest", root, views="*")) == 4
