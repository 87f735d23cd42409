"""Ensembles: the mean of the members' predictions over shared tasks and labels."""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.infer.ensemble import Ensemble, EnsembleError, combine_outputs
from medzoo.infer.predict import Predictor, TaskOutput
from tests.helpers import build_model

TASKS = {"findings": {"type": "multilabel", "level": "image", "labels": ["a", "b", "c"]},
         "covid": {"type": "classification", "level": "image", "labels": ["neg", "pos"]}}


@pytest.fixture(scope="module")
def pair():
    return build_model(TASKS, seed=1), build_model(TASKS, seed=2)


def test_two_models_equal_mean_of_separate_predictions(pair):
    img = (np.random.default_rng(0).random((1, 32, 32)) * 255).astype(np.uint8)
    meta = {"max_value": 255.0}
    p1, p2 = (Predictor(m, preprocessing={"modality": ["CXR"], "axes": "HW", "rescale": "max_value"}) for m in pair)
    a, b = p1.predict_array(img, "image", meta), p2.predict_array(img, "image", meta)
    assert not np.allclose(a["findings"].probs, b["findings"].probs)  # the members really differ
    ens = Ensemble([p1, p2]).predict_array(img, "image", meta)
    for task in TASKS:
        np.testing.assert_allclose(ens[task].probs, (a[task].probs + b[task].probs) / 2, atol=1e-12)
    weighted = Ensemble([p1, p2], weights=[3, 1]).predict_array(img, "image", meta)
    np.testing.assert_allclose(weighted["covid"].probs, 0.75 * a["covid"].probs + 0.25 * b["covid"].probs)


def _out(task, kind, labels, probs, **kw):
    return {task: TaskOutput(task, kind, tuple(labels), probs=np.asarray(probs, dtype=float), **kw)}


def test_only_common_labels_and_tasks():
    a = {**_out("f", "multilabel", "abc", [0.1, 0.2, 0.3], thresholds=np.array([0.5, 0.4, 0.3])),
         **_out("only_a", "classification", "xy", [0.5, 0.5])}
    b = _out("f", "multilabel", "dcb", [0.9, 0.7, 0.5], thresholds=np.array([0.5, 0.6, 0.2]))
    got = combine_outputs([a, b])
    assert list(got) == ["f"] and got["f"].labels == ("b", "c")
    np.testing.assert_allclose(got["f"].probs, [(0.2 + 0.5) / 2, (0.3 + 0.7) / 2])
    np.testing.assert_allclose(got["f"].thresholds, [(0.4 + 0.2) / 2, (0.3 + 0.6) / 2])


def test_classification_subset_is_renormalised():
    a = _out("c", "classification", ["n", "p", "covid"], [0.2, 0.3, 0.5])
    b = _out("c", "classification", ["n", "p"], [0.6, 0.4])
    got = combine_outputs([a, b])["c"]
    mean = np.array([0.4, 0.35])
    np.testing.assert_allclose(got.probs, mean / mean.sum())


def test_no_shared_task_is_a_clear_error():
    a = _out("f", "multilabel", "ab", [0.1, 0.2])
    b = _out("g", "multilabel", "ab", [0.1, 0.2])
    c = _out("f", "classification", "ab", [0.4, 0.6])
    with pytest.raises(EnsembleError, match="share no task.*member 0.*f \\(multilabel\\).*member 1.*g"):
        combine_outputs([a, b])
    with pytest.raises(EnsembleError, match="share no task"):
        combine_outputs([a, c])  # same name, different type
    with pytest.raises(EnsembleError, match="2 weights for 1"):
        combine_outputs([a], weights=[1, 2])
