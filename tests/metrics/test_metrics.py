"""Metrics against independent computations: MONAI for overlap, brute-force pairs for AUROC, numpy loops otherwise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics import DiceMetric, MeanIoU
from scipy.stats import rankdata

from medzoo.metrics import (
    aggregate_by_patient,
    auroc,
    auroc_bootstrap_ci,
    binary_metrics,
    classification_metrics,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mae,
    mean_auroc,
    one_hot_targets,
    r2_score,
    regression_metrics,
)
from tests.helpers import check_bootstrap_ci, pair_auc


# --------------------------------------------------------------------------------------------- segmentation
def _volumes(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, 4, (3, 10, 9, 8), generator=g)
    target = torch.randint(0, 4, (3, 10, 9, 8), generator=g)
    target[1][target[1] == 2] = 0  # class 2 absent from sample 1's target -> exercises the empty rule
    pred[2][pred[2] == 3] = 1
    return pred, target


def _onehot(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(x, k).movedim(-1, 1)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("ignore_empty", [True, False])
def test_dice_and_iou_match_monai(include_background, ignore_empty):
    pred, target = _volumes(0)
    p1, t1 = _onehot(pred, 4), _onehot(target, 4)
    kw = dict(include_background=include_background, ignore_empty=ignore_empty)
    ref_dice = DiceMetric(reduction="none", **kw)(p1, t1)
    ref_iou = MeanIoU(reduction="none", **kw)(p1, t1)
    pairs = [(dice_per_class(pred, target, 4, **kw), ref_dice), (iou_per_class(pred, target, 4, **kw), ref_iou)]
    for ours, ref in pairs:
        assert ours.shape == ref.shape == (3, 4 if include_background else 3)
        np.testing.assert_allclose(ours.numpy(), ref.double().numpy(), rtol=1e-6, equal_nan=True)
    if ignore_empty:
        assert torch.isnan(dice_per_class(pred, target, 4)[1, 2])
    np.testing.assert_array_equal(dice_per_class(p1, t1, **kw).numpy(), dice_per_class(pred, target, 4, **kw).numpy())
    np.testing.assert_array_equal(iou_per_class(pred.numpy(), target.numpy(), 4, **kw).numpy(), pairs[1][0].numpy())


def test_dice_iou_hand_example_and_errors():
    pred = torch.tensor([[[1, 1, 0], [0, 1, 0]]])
    target = torch.tensor([[[1, 0, 0], [1, 1, 0]]])
    # class 1: |P|=3, |T|=3, |P∩T|=2 -> Dice 4/6, IoU 2/4; class 0: |P|=3, |T|=3, |P∩T|=2
    np.testing.assert_allclose(dice_per_class(pred, target, 2).numpy(), [[4 / 6, 4 / 6]])
    np.testing.assert_allclose(iou_per_class(pred, target, 2).numpy(), [[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        dice_per_class(pred + 1, target, 2)
    with pytest.raises(ValueError, match="num_classes"):
        dice_per_class(pred * 2, target)  # a 3-class label map without num_classes is not one-hot
    with pytest.raises(ValueError, match="num_classes"):
        dice_per_class(pred[:, 0], target[:, 0])


def _np_overlap(pred: np.ndarray, target: np.ndarray, k: int, ignore_empty: bool) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU per sample and class from voxel counts in plain numpy (the rules written out)."""
    dice, iou = np.zeros((len(pred), k)), np.zeros((len(pred), k))
    for b, c in itertools.product(range(len(pred)), range(k)):
        p, t = pred[b] == c, target[b] == c
        inter, n_p, n_t = np.sum(p & t), np.sum(p), np.sum(t)
        if n_t == 0:
            dice[b, c] = iou[b, c] = np.nan if ignore_empty else float(n_p == 0)
        else:
            dice[b, c], iou[b, c] = 2 * inter / (n_p + n_t), inter / (n_p + n_t - inter)
    return dice, iou


@pytest.mark.parametrize("ignore_empty", [True, False])
def test_dice_and_iou_equal_numpy_voxel_counts_exactly(ignore_empty):
    pred, target = _volumes(1)
    target[0][target[0] == 3] = 0
    pred[0][pred[0] == 3] = 0  # class 3 empty in both maps of sample 0 -> 1 (or NaN)
    ref_dice, ref_iou = _np_overlap(pred.numpy(), target.numpy(), 4, ignore_empty)
    ours_dice = dice_per_class(pred, target, 4, ignore_empty=ignore_empty)
    ours_iou = iou_per_class(pred, target, 4, ignore_empty=ignore_empty)
    assert ours_dice.dtype == torch.float64
    np.testing.assert_allclose(ours_dice.numpy(), ref_dice, rtol=1e-15, atol=0, equal_nan=True)
    np.testing.assert_allclose(ours_iou.numpy(), ref_iou, rtol=1e-15, atol=0, equal_nan=True)


def test_single_channel_one_hot_dice_is_float64_exact():
    """One channel is where MONAI switches to label-map counting in float32; the result must stay exact."""
    pred = torch.tensor([[[1, 1, 0, 1, 0, 0]]])
    target = torch.tensor([[[1, 0, 0, 1, 1, 0]]])
    assert dice_per_class(pred, target).item() == 2 * 2 / 6
    assert iou_per_class(pred, target).item() == 2 / 4


# ---------------------------------------------------------------------------------------------------- AUROC
def test_auroc_matches_brute_force_pairs_with_ties_and_nan():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((40, 5)), 1)  # heavy ties
    targets = (rng.random((40, 5)) < 0.4).astype(float)
    targets[rng.random((40, 5)) < 0.2] = np.nan
    targets[:, 3] = np.where(np.isnan(targets[:, 3]), np.nan, 1.0)  # label 3: positives only -> undefined
    ours = auroc(scores, targets)
    ref = np.array([pair_auc(scores[:, j], targets[:, j]) for j in range(5)])
    assert np.isnan(ours[3])
    assert np.isnan(ref[3])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, equal_nan=True)
    assert mean_auroc(scores, targets) == pytest.approx(np.mean(ref[[0, 1, 2, 4]]), rel=1e-12)
    assert auroc(scores[:, 0], targets[:, 0]) == pytest.approx(ref[0], rel=1e-12)


@settings(deadline=None, derandomize=True, max_examples=40)
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0.0, 1.0, float("nan")])), min_size=1, max_size=25))
def test_auroc_property_matches_brute_force(rows):
    scores = np.array([r[0] for r in rows], dtype=float) / 4  # few distinct values: many ties
    targets = np.array([r[1] for r in rows])
    ours, ref = auroc(scores, targets), pair_auc(scores, targets)
    assert (np.isnan(ours) and np.isnan(ref)) or ours == pytest.approx(ref, rel=1e-12)


def test_auroc_equals_the_mann_whitney_statistic_on_a_large_tied_sample():
    """The previous implementation's formula, U / (n_pos n_neg) from average ranks (scipy's), at N = 3000."""
    rng = np.random.default_rng(5)
    scores = np.round(rng.normal(size=(3000, 3)), 2)
    targets = (rng.random((3000, 3)) < 0.2).astype(float)
    targets[rng.random((3000, 3)) < 0.1] = np.nan
    for j in range(3):
        keep = ~np.isnan(targets[:, j])
        s, t = scores[keep, j], targets[keep, j]
        n_pos, n_neg = int(t.sum()), int((1 - t).sum())
        u = rankdata(s)[t == 1].sum() - n_pos * (n_pos + 1) / 2
        assert auroc(scores, targets)[j] == pytest.approx(u / (n_pos * n_neg), rel=1e-12)


def test_auroc_is_rank_based_and_checks_input():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 2))
    targets = (rng.random((30, 2)) < 0.5).astype(float)
    np.testing.assert_allclose(auroc(1 / (1 + np.exp(-logits)), targets), auroc(logits, targets), rtol=1e-12)
    assert auroc(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 1.0])) == 1.0
    assert auroc(np.array([0.9, 0.1]), np.array([0.0, 1.0])) == 0.0
    assert np.isnan(mean_auroc(np.array([[0.1], [0.2]]), np.array([[1.0], [1.0]])))
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        auroc(np.array([0.1, 0.2]), np.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="scores contain NaN"):
        auroc(np.array([np.nan, 0.2]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="same|must both"):
        auroc(np.zeros((3, 2)), np.zeros((3, 3)))


def test_one_hot_targets_give_one_vs_rest_auroc():
    y = np.array([0, 2, 1, np.nan, 2, 0, 1])
    probs = np.random.default_rng(2).dirichlet(np.ones(3), size=7)
    t = one_hot_targets(y, 3)
    assert np.isnan(t[3]).all()
    assert t[~np.isnan(y)].sum(axis=1).tolist() == [1.0] * 6
    for k in range(3):
        is_k = np.where(np.isnan(y), np.nan, (y == k).astype(float))
        assert auroc(probs, t)[k] == pytest.approx(pair_auc(probs[:, k], is_k), rel=1e-12)


def test_bootstrap_ci_matches_an_independent_resampling():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((25, 2)), 1)
    targets = (rng.random((25, 2)) < 0.3).astype(float)
    targets[0, 1] = np.nan
    ci = auroc_bootstrap_ci(scores, targets, n_boot=60, seed=7)
    draw = np.random.default_rng(7)
    reps = []
    for _ in range(60):
        idx = draw.integers(0, 25, size=25)
        reps.append([pair_auc(scores[idx, j], targets[idx, j]) for j in range(2)])
    check_bootstrap_ci(ci, np.array(reps), scores, targets)
    again = auroc_bootstrap_ci(scores, targets, n_boot=60, seed=7)
    np.testing.assert_array_equal(again.lower, ci.lower)
    other = auroc_bootstrap_ci(scores, targets, n_boot=60, seed=8)
    assert not np.array_equal(other.lower, ci.lower) or not np.array_equal(other.upper, ci.upper)
    with pytest.raises(ValueError, match="n_boot"):
        auroc_bootstrap_ci(scores, targets, n_boot=0)


# ------------------------------------------------------------------------------------------- classification
def test_confusion_matrix_and_classification_metrics_match_loops():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 50).astype(float)
    y[[3, 9]] = np.nan
    probs = rng.random((50, 3))
    pred = probs.argmax(1)
    cm = confusion_matrix(y, probs, 3)
    ref = np.zeros((3, 3), int)
    for t, p in zip(y, pred):
        if not np.isnan(t):
            ref[int(t), p] += 1
    np.testing.assert_array_equal(cm, ref)
    m = classification_metrics(y, pred, 3, ["normal", "pneumonia", "covid"])
    keep = ~np.isnan(y)
    assert m["accuracy"] == pytest.approx(np.mean(pred[keep] == y[keep]))
    for k, name in enumerate(["normal", "pneumonia", "covid"]):
        tp = np.sum((pred == k) & (y == k))
        fn = np.sum((pred != k) & (y == k))
        fp = np.sum((pred == k) & (y != k) & keep)
        tn = np.sum((pred != k) & (y != k) & keep)
        assert m[f"sensitivity/{name}"] == pytest.approx(tp / (tp + fn))
        assert m[f"specificity/{name}"] == pytest.approx(tn / (tn + fp))
        assert m[f"precision/{name}"] == pytest.approx(tp / (tp + fp))
        prec, rec = tp / (tp + fp), tp / (tp + fn)
        assert m[f"f1/{name}"] == pytest.approx(2 * prec * rec / (prec + rec))
    assert m["macro_f1"] == pytest.approx(np.mean([m[f"f1/{n}"] for n in ["normal", "pneumonia", "covid"]]))


def test_binary_metrics_and_undefined_rates():
    y = np.array([0, 0, 1, 1, 1, np.nan])
    s = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.5])
    m = binary_metrics(y, s)
    # predictions at 0.5: [0, 1, 1, 0, 1]; TP=2 FN=1 FP=1 TN=1
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(pair_auc(s, y))
    no_pos = binary_metrics(np.array([0.0, 0.0]), np.array([0.1, 0.2]))
    assert np.isnan(no_pos["sensitivity"])
    assert no_pos["specificity"] == 1.0
    assert np.isnan(no_pos["auroc"])
    with pytest.raises(ValueError, match="class labels"):
        confusion_matrix([0, 3], [0, 1], 2)


# ------------------------------------------------------------------------------------------------ regression
def test_mae_and_r2_match_numpy():
    rng = np.random.default_rng(5)
    t = rng.uniform(0, 8, (30, 2))
    p = t + rng.normal(0, 1, (30, 2))
    t[[1, 5, 7], 1] = np.nan
    for j in range(2):
        v = ~np.isnan(t[:, j])
        e = p[v, j] - t[v, j]
        assert mae(p, t)[j] == pytest.approx(np.mean(np.abs(e)))
        r2 = 1 - np.sum(e**2) / np.sum((t[v, j] - np.mean(t[v, j])) ** 2)
        assert r2_score(p, t)[j] == pytest.approx(r2)
    m = regression_metrics(p, t, ["geographic", "opacity"])
    assert m["r2/opacity"] == pytest.approx(r2_score(p, t)[1])
    assert set(m) == {"mae/geographic", "mae/opacity", "r2/geographic", "r2/opacity"}
    assert np.isnan(r2_score(np.array([1.0, 2.0]), np.array([3.0, 3.0])))
    assert np.isnan(mae(np.array([[1.0]]), np.array([[np.nan]]))[0])


# ---------------------------------------------------------------------------------------------- patient level
def test_aggregate_by_patient_mean_and_majority():
    ids = ["p1", "p2", "p1", "p1", "p2", "p3", "p3"]
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.1, 0.5, 0.4], [0.2, 0.5, 0.3],
                      [0.5, 0.1, 0.4], [0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    targets = np.array([1, 2, 1, np.nan, 2, 0, 0])
    mean = aggregate_by_patient(ids, probs, targets)
    assert mean.patient_ids == ["p1", "p2", "p3"]
    assert mean.n_slices.tolist() == [3, 2, 2]
    np.testing.assert_allclose(mean.probs[0], probs[[0, 2, 3]].mean(0))
    np.testing.assert_allclose(mean.probs[2], probs[[5, 6]].mean(0))
    assert mean.pred.tolist() == [1, 2, 0]
    assert mean.targets.tolist() == [1, 2, 0]
    maj = aggregate_by_patient(ids, probs, targets, method="majority")
    # p1 votes [0, 1, 1] -> 1; p2 votes [2, 0] tie -> higher mean prob: class 2 (0.55) over 0 (0.3);
    # p3 votes [0, 2] tie -> class 0 (0.4) over 2 (0.35)
    np.testing.assert_allclose(maj.probs[0], [1 / 3, 2 / 3, 0])
    assert maj.pred.tolist() == [1, 2, 0]
    binary = aggregate_by_patient(["a", "a", "b"], np.array([0.9, 0.2, 0.3]))
    np.testing.assert_allclose(binary.probs[:, 1], [0.55, 0.3])
    with pytest.raises(ValueError, match="'p1' has slices with different labels"):
        aggregate_by_patient(ids, probs, np.array([1, 2, 0, 1, 2, 0, 0]))
    with pytest.raises(ValueError, match="method"):
        aggregate_by_patient(ids, probs, method="median")
