"""The cluster (patient) bootstrap of AUROC CIs against a plain-numpy resampling written here, and its width on
clustered data: simulated patients with several correlated images each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medzoo.metrics import auroc_bootstrap_ci
from medzoo.metrics.bootstrap import ResamplingUnits
from tests.helpers import check_bootstrap_ci, pair_auc


def _patient_bootstrap(s: np.ndarray, t: np.ndarray, patients: list, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, L]`` replicate AUROCs: draw patients (numbered by first appearance) with replacement from
    ``default_rng(seed).integers(0, P, P)``, keep all their rows in row order."""
    members: dict = {}
    for row, pid in enumerate(patients):
        members.setdefault(pid, []).append(row)
    clusters = list(members.values())
    rng = np.random.default_rng(seed)
    reps = np.full((n_boot, s.shape[1]), np.nan)
    for b in range(n_boot):
        rows = [r for g in rng.integers(0, len(clusters), size=len(clusters)) for r in clusters[g]]
        reps[b] = [pair_auc(s[rows, j], t[rows, j]) for j in range(s.shape[1])]
    return reps


def _clustered(rng: np.random.Generator, n_patients: int, per_patient: int, image_sd: float):
    """Scores, targets and patient ids: one label and one latent score per patient, images = latent + noise."""
    y = (rng.random(n_patients) < 0.5).astype(float)
    latent = y * 0.8 + rng.normal(size=n_patients)
    patients = np.repeat(np.arange(n_patients), per_patient)
    scores = latent[patients] + rng.normal(scale=image_sd, size=len(patients))
    return scores, y[patients], [f"p{p}" for p in patients]


def test_cluster_bootstrap_matches_an_independent_patient_resampling():
    rng = np.random.default_rng(11)
    patients = [f"pat{k}" for k in rng.integers(0, 9, size=30)]  # 9 patients, rows interleaved
    t = (rng.random((30, 2)) < 0.4).astype(float)
    t[[2, 17], 1] = np.nan
    s = np.round(rng.random((30, 2)) + 0.3 * np.nan_to_num(t), 1)  # rounded: ties
    ci = auroc_bootstrap_ci(s, t, n_boot=150, seed=5, groups=patients)
    reps = _patient_bootstrap(s, t, patients, 150, 5)
    assert ci.clustered
    assert ci.n_units == len(set(patients))
    check_bootstrap_ci(ci, reps, s, t)


def test_one_row_per_patient_is_the_row_bootstrap_draw_for_draw():
    rng = np.random.default_rng(2)
    s, t = rng.random(40), (rng.random(40) < 0.5).astype(float)
    rows = auroc_bootstrap_ci(s, t, n_boot=80, seed=3)
    own = auroc_bootstrap_ci(s, t, n_boot=80, seed=3, groups=[f"id{i}" for i in range(40)])
    assert not rows.clustered
    np.testing.assert_array_equal(own.lower, rows.lower)
    np.testing.assert_array_equal(own.upper, rows.upper)


@pytest.mark.parametrize("seed", range(5))
def test_patient_bootstrap_is_wider_than_the_row_bootstrap_on_clustered_data(seed):
    # 40 patients x 5 near-duplicate images: the data hold 40 independent observations, not 200.
    s, t, patients = _clustered(np.random.default_rng(seed), 40, 5, image_sd=0.1)
    by_row = auroc_bootstrap_ci(s, t, n_boot=300, seed=0)
    by_patient = auroc_bootstrap_ci(s, t, n_boot=300, seed=0, groups=patients)
    width_row = by_row.upper[0] - by_row.lower[0]
    width_patient = by_patient.upper[0] - by_patient.lower[0]
    assert width_patient > 1.6 * width_row, (width_patient, width_row)


def test_without_within_patient_correlation_the_widths_agree():
    # the control: patient ids on images whose scores are independent -> clustering changes little
    rng = np.random.default_rng(7)
    y = np.repeat((rng.random(40) < 0.5).astype(float), 5)
    s = y * 0.8 + rng.normal(size=200)
    patients = list(np.repeat(np.arange(40), 5))
    by_row = auroc_bootstrap_ci(s, y, n_boot=300, seed=0)
    by_patient = auroc_bootstrap_ci(s, y, n_boot=300, seed=0, groups=patients)
    ratio = (by_patient.upper[0] - by_patient.lower[0]) / (by_row.upper[0] - by_row.lower[0])
    assert 0.7 < ratio < 1.4, ratio


@pytest.mark.slow
def test_patient_bootstrap_covers_the_population_auroc_and_the_row_bootstrap_does_not():
    """Coverage over 200 simulated datasets (30 patients x 4 correlated images) of the population image-level
    AUROC, P(score of a positive image > score of a negative image) = Phi(0.8 / sqrt(2 (1 + 0.1^2)))."""
    truth = 0.5 * (1 + math.erf(0.8 / math.sqrt(2 * (1 + 0.01)) / math.sqrt(2)))
    rng = np.random.default_rng(123)
    hits = {"row": 0, "patient": 0}
    for _ in range(200):
        s, t, patients = _clustered(rng, 30, 4, image_sd=0.1)
        for unit, groups in (("row", None), ("patient", patients)):
            ci = auroc_bootstrap_ci(s, t, n_boot=200, seed=1, groups=groups)
            hits[unit] += int(ci.lower[0] <= truth <= ci.upper[0])
    # nominal 0.95; the percentile bootstrap over 30 clusters runs a little under it, the row bootstrap far under
    assert hits["patient"] / 200 >= 0.85, hits
    assert hits["row"] / 200 <= 0.75, hits


def test_resampling_units_draw_whole_clusters():
    units = ResamplingUnits.of(["b", "a", "b", "c", "a", "b"])
    assert (units.n_units, units.n_rows) == (3, 6)
    rng = np.random.default_rng(0)
    members = {"b": [0, 2, 5], "a": [1, 4], "c": [3]}
    for _ in range(20):
        rows = units.draw(rng).tolist()
        # split the drawn rows back into clusters: each drawn cluster contributes all its rows, in row order
        chunks, i = [], 0
        while i < len(rows):
            key = next(k for k, m in members.items() if m[0] == rows[i])
            assert rows[i : i + len(members[key])] == members[key]
            chunks.append(key)
            i += len(members[key])
        assert len(chunks) == 3


def test_resampling_units_errors():
    with pytest.raises(ValueError, match="one cluster key per row"):
        ResamplingUnits.of(["a", "b"], n_rows=3)
    with pytest.raises(ValueError, match="n_rows"):
        ResamplingUnits.of(None)
    with pytest.raises(ValueError, match="one cluster key per row"):
        auroc_bootstrap_ci(np.arange(4.0), np.array([0, 1, 0, 1]), n_boot=5, groups=["a", "b"])
