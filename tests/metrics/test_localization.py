"""Localisation metrics against hand-computed values, starting with a 4x4 heatmap worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medzoo.metrics.localization import (
    IOBB_THRESHOLDS,
    binarize_top_k,
    box_to_mask,
    dice,
    hit_rates,
    iobb,
    iou,
    localization_scores,
    mask_to_boxes,
    minmax_normalize,
    pointing_game,
    soft_dice,
)

A = np.array([[0.01, 0.03, 0.02, 0.02], [0.05, 0.12, 0.09, 0.07], [0.89, 0.85, 0.88, 0.91], [0.99, 0.97, 0.95, 0.97]])
B = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
B_BOX = (0, 2, 4, 2)  # x, y, w, h covering rows 2-3


# ------------------------------------------------------------------------------------- the worked 4x4 example
def test_worked_example_sums():
    assert A.sum() == pytest.approx(7.82, abs=1e-12)
    assert B.sum() == 8


def test_worked_example_soft_dice_by_hand():
    sum_ab = 0.89 + 0.85 + 0.88 + 0.91 + 0.99 + 0.97 + 0.95 + 0.97  # 7.41: A on the 8 cells of B
    sum_a2 = (0.01**2 + 0.03**2 + 0.02**2 + 0.02**2 + 0.05**2 + 0.12**2 + 0.09**2 + 0.07**2
              + 0.89**2 + 0.85**2 + 0.88**2 + 0.91**2 + 0.99**2 + 0.97**2 + 0.95**2 + 0.97**2)  # 6.9132
    sum_b2 = 8.0
    assert sum_ab == pytest.approx(7.41) and sum_a2 == pytest.approx(6.9132)
    assert soft_dice(A, B) == pytest.approx(2 * sum_ab / (sum_a2 + sum_b2), rel=1e-12)  # 0.99376
    assert soft_dice(A, B, squared=False) == pytest.approx(2 * 7.41 / (7.82 + 8), rel=1e-12)  # 0.93679
    assert soft_dice(torch.tensor(A), torch.tensor(B)) == pytest.approx(soft_dice(A, B), rel=1e-12)


def test_worked_example_top_k_binarisation():
    # Sorted A: 0.99, 0.97, 0.97, 0.95, 0.91, 0.89, 0.88, 0.85 | 0.12, 0.09, 0.07, 0.05, 0.03, 0.02, 0.02, 0.01.
    # k = 50: n = 8 cells, exactly B.
    np.testing.assert_array_equal(binarize_top_k(A, 50), B.astype(bool))
    # k = 5: n = ceil(0.8) = 1 -> {0.99}. k = 20: n = ceil(3.2) = 4 -> {0.99, 0.97, 0.97, 0.95}.
    np.testing.assert_array_equal(np.argwhere(binarize_top_k(A, 5)), [[3, 0]])
    np.testing.assert_array_equal(np.argwhere(binarize_top_k(A, 20)), [[3, 0], [3, 1], [3, 2], [3, 3]])
    # k = 10: n = ceil(1.6) = 2, but 0.97 is tied at the 2nd place: "include" (default) keeps both 0.97 (3 cells),
    # "first" keeps the first in raster order, "random" one of the two.
    np.testing.assert_array_equal(np.argwhere(binarize_top_k(A, 10)), [[3, 0], [3, 1], [3, 3]])
    np.testing.assert_array_equal(np.argwhere(binarize_top_k(A, 10, ties="first")), [[3, 0], [3, 1]])
    drawn = np.argwhere(binarize_top_k(A, 10, ties="random", seed=3)).tolist()
    assert drawn in ([[3, 0], [3, 1]], [[3, 0], [3, 3]])


@pytest.mark.parametrize("target", [B, B_BOX], ids=["mask", "box"])
def test_worked_example_localization_scores(target):
    s = localization_scores(A, target, ks=(5, 10, 20, 50, 75))
    # |B| = 8; the kept cells all lie in B until k = 75 (n = 12: B plus the whole of row 1). k = 10 keeps the
    # tied 0.97 pair: 3 cells.
    expected = {5: (1, 1), 10: (3, 3), 20: (4, 4), 50: (8, 8), 75: (8, 12)}  # k: (|P ∩ B|, |P|)
    for k, (inter, n_pred) in expected.items():
        assert s[f"iou@{k}"] == pytest.approx(inter / (n_pred + 8 - inter)), k
        assert s[f"dice@{k}"] == pytest.approx(2 * inter / (n_pred + 8)), k
        assert s[f"kept@{k}"] == n_pred / 16, k
    assert s["iou@50"] == 1.0 and s["dice@50"] == 1.0
    assert s["iou@10"] == pytest.approx(3 / 8) and s["dice@10"] == pytest.approx(6 / 11)
    # IoBB: predicted boxes lie inside B for k <= 50; at k = 75 the one region spans rows 1-3 (12 cells, 8 in B).
    assert [s[f"iobb@{k}"] for k in (5, 10, 20, 50)] == [1.0, 1.0, 1.0, 1.0]
    assert s["iobb@75"] == pytest.approx(8 / 12)
    assert s["pointing"] == 1.0
    assert s["soft_dice"] == pytest.approx(soft_dice(A, B)) and s["soft_dice_plain"] == pytest.approx(14.82 / 15.82)


def test_worked_example_first_tie_rule_in_scores():
    s = localization_scores(A, B, ks=(10,), ties="first")
    assert s["iou@10"] == pytest.approx(2 / 8)
    assert s["dice@10"] == pytest.approx(4 / 10)
    assert s["kept@10"] == 2 / 16


# -------------------------------------------------------------------------------------------- other pieces
def test_binary_overlap_and_errors():
    p = np.array([[1, 1, 0], [0, 1, 0]])
    t = np.array([[0, 1, 1], [0, 1, 0]])
    assert iou(p, t) == pytest.approx(2 / 4) and dice(p, t) == pytest.approx(4 / 6)
    assert iou(np.zeros(3), np.zeros(3)) == 1.0 and dice(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(ValueError, match="binary"):
        iou(A, B)
    with pytest.raises(ValueError, match="same shape"):
        dice(p, t.T)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soft_dice(A * 2, B)
    with pytest.raises(ValueError, match="k_percent"):
        binarize_top_k(A, 0)
    with pytest.raises(ValueError, match="NaN"):
        binarize_top_k(np.array([np.nan, 1.0]), 50)


def test_minmax_and_normalized_scores():
    np.testing.assert_allclose(minmax_normalize(A * 5 + 2), (A - 0.01) / 0.98)
    np.testing.assert_array_equal(minmax_normalize(np.ones((2, 2))), np.zeros((2, 2)))
    s = localization_scores(A * 5 + 2, B, ks=(50,), normalize=True)
    assert s["soft_dice"] == pytest.approx(soft_dice((A - 0.01) / 0.98, B)) and s["iou@50"] == 1.0


def test_box_to_mask_centre_rule_scale_and_errors():
    np.testing.assert_array_equal(box_to_mask(B_BOX, (4, 4)), B.astype(bool))
    # NIH 1024-px box (x=256, y=512, w=512, h=256) on a 4x4 map: x 1..3, y 2..3 -> row 2, columns 1-2
    m = box_to_mask((256, 512, 512, 256), (4, 4), scale=4 / 1024)
    np.testing.assert_array_equal(np.argwhere(m), [[2, 1], [2, 2]])
    # fractional box: x in [0.6, 2.4) holds centres 1.5 only -> column 1; y in [0.4, 1.6) holds centres 0.5, 1.5
    np.testing.assert_array_equal(np.argwhere(box_to_mask((0.6, 0.4, 1.8, 1.2), (3, 3))), [[0, 1], [1, 1]])
    # anisotropic scale (sx, sy) and a box smaller than a pixel -> the pixel holding its centre
    np.testing.assert_array_equal(np.argwhere(box_to_mask((4, 0, 4, 8), (4, 4), scale=(0.25, 0.5))), [[0, 1], [1, 1],
                                                                                                       [2, 1], [3, 1]])
    np.testing.assert_array_equal(np.argwhere(box_to_mask((2.1, 1.1, 0.2, 0.2), (4, 4))), [[1, 2]])
    with pytest.raises(ValueError, match="outside"):
        box_to_mask((10, 10, 0.2, 0.2), (4, 4))
    with pytest.raises(ValueError, match="positive"):
        box_to_mask((0, 0, 0, 2), (4, 4))


def test_iobb_boxes_versus_mask_region():
    pred = np.array([[1, 0, 0, 0],
                     [1, 1, 1, 0],
                     [0, 0, 0, 0],
                     [0, 0, 0, 1]])
    gt = (0, 0, 2, 2)  # columns 0-1, rows 0-1
    assert mask_to_boxes(pred) == [(0, 0, 3, 2), (3, 3, 1, 1)]
    # region box (0,0,3,2): 6 cells, 4 inside GT -> 2/3; the lone cell at (3,3) -> 0; best = 2/3
    assert iobb(pred, gt) == pytest.approx(4 / 6)
    # "mask": 5 predicted cells, 3 inside GT
    assert iobb(pred, gt, region="mask") == pytest.approx(3 / 5)
    assert iobb(np.zeros((4, 4)), gt) == 0.0
    with pytest.raises(ValueError, match="region"):
        iobb(pred, gt, region="convex")


def test_hit_rates_at_chestxray_thresholds():
    values = [0.1, 0.3, 0.5, 0.8, 0.95]
    assert IOBB_THRESHOLDS == (0.1, 0.25, 0.5, 0.75, 0.9)
    # IoBB > T: 0.1 -> {0.3, 0.5, 0.8, 0.95}; 0.5 -> {0.8, 0.95}; 0.9 -> {0.95}
    assert hit_rates(values) == {0.1: 0.8, 0.25: 0.8, 0.5: 0.4, 0.75: 0.4, 0.9: 0.2}
    assert hit_rates(values, strict=False)[0.5] == pytest.approx(0.6)  # >= counts the 0.5 as well


def test_pointing_game_ties_tolerance_and_3d():
    assert pointing_game(A, B) and not pointing_game(A, 1 - B)
    flat = np.ones((4, 4))
    assert not pointing_game(flat, B) and pointing_game(flat, np.ones((4, 4)))
    h = np.zeros((6, 6))
    h[0, 0] = 1.0
    target = (2, 2, 2, 2)  # nearest target cell (2, 2) is sqrt(8) ~ 2.83 px away
    assert not pointing_game(h, target, tolerance=2.0) and pointing_game(h, target, tolerance=3.0)
    vol = np.zeros((3, 4, 4))
    vol[1, 2, 2] = 1.0
    mask = np.zeros((3, 4, 4))
    mask[1, 1:3, 1:3] = 1
    scores = localization_scores(vol, mask, ks=(10,))
    assert scores["pointing"] == 1.0 and "iobb@10" not in scores
    # k = 10 of 48 cells: n = ceil(4.8) = 5. "include" (default): every cell ties with the 5th value (0) -> all 48.
    # "first": the peak plus the first 4 zeros in raster order, (0,0,0..3), none in the 4-cell mask -> IoU 1 / 8.
    assert scores["iou@10"] == pytest.approx(4 / 48)
    assert scores["kept@10"] == 1.0
    assert localization_scores(vol, mask, ks=(10,), ties="first")["iou@10"] == pytest.approx(1 / 8)


def test_localization_scores_rejects_empty_target():
    with pytest.raises(ValueError, match="empty"):
        localization_scores(A, np.zeros((4, 4)))
