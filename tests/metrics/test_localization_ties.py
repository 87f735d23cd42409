"""Top-k ties: the default rule scores a box the same wherever it lies (mirror a heatmap and its box: same scores).

The heatmap is a ReLU'd 7x7 map upsampled bilinearly to 224 px, as a Grad-CAM is: most of it is exact zeros, so
top-k at 20-80 % has to choose among tied cells.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medzoo.metrics.localization import TIE_RULES, binarize_top_k, localization_scores

SIZE = 224
KS = (5, 10, 20, 50, 80)


def _gradcam_like(seed: int, symmetric: bool = False) -> np.ndarray:
    """A ReLU'd 7x7 map bilinearly upsampled to 224 px (55-75 % exact zeros), scaled to a maximum of 1."""
    coarse = np.maximum(np.random.default_rng(seed).normal(size=(7, 7)) - 1.0, 0.0)
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None, None], size=(SIZE, SIZE), mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    if symmetric:  # point-symmetric: the map equals its 180-degree rotation (a + b == b + a exactly)
        up = up + up[::-1, ::-1]
    return up / up.max()


def _flip_box(box: tuple[int, int, int, int], axes: tuple[int, ...]) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return (SIZE - x - w if 1 in axes else x, SIZE - y - h if 0 in axes else y, w, h)


def _assert_same_scores(a: dict[str, float], b: dict[str, float]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize("axes", [(0,), (1,), (0, 1)], ids=["upside-down", "left-right", "rotated-180"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mirrored_heatmap_and_box_score_the_same(seed, axes):
    heat = _gradcam_like(seed)
    assert (heat == 0).mean() > 0.5  # mostly exact zeros: the case where tie rules matter
    box = (30, 20, 60, 50)
    ours = localization_scores(heat, box, ks=KS)
    mirrored = localization_scores(np.flip(heat, axes).copy(), _flip_box(box, axes), ks=KS)
    _assert_same_scores(ours, mirrored)


def test_the_raster_order_rule_is_not_mirror_invariant():
    """The earlier rule, still available as ties="first": on the same inputs the top-left box gets more."""
    heat, box = _gradcam_like(0), (30, 20, 60, 50)
    top_left = localization_scores(heat, box, ks=KS, ties="first")
    bottom_right = localization_scores(np.flip(heat, (0, 1)).copy(), _flip_box(box, (0, 1)), ks=KS, ties="first")
    assert top_left["iou@80"] > bottom_right["iou@80"]


def test_symmetric_boxes_on_a_symmetric_heatmap_score_the_same():
    heat = _gradcam_like(3, symmetric=True)
    np.testing.assert_array_equal(heat, heat[::-1, ::-1])
    top_left, bottom_right = (8, 8, 40, 40), _flip_box((8, 8, 40, 40), (0, 1))
    _assert_same_scores(localization_scores(heat, top_left, ks=KS), localization_scores(heat, bottom_right, ks=KS))
    first = [localization_scores(heat, b, ks=KS, ties="first") for b in (top_left, bottom_right)]
    assert any(first[0][f"iou@{k}"] != first[1][f"iou@{k}"] for k in KS)


@settings(deadline=None, derandomize=True, max_examples=60)
@given(heat=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 3).map(float)),
       k=st.floats(1, 100), axes=st.sampled_from([(0,), (1,), (0, 1)]))
def test_include_rule_commutes_with_flips_and_is_the_percentile_threshold(heat, k, axes):
    kept = binarize_top_k(heat, k)
    np.testing.assert_array_equal(binarize_top_k(np.flip(heat, axes).copy(), k), np.flip(kept, axes))
    n = max(1, int(np.ceil(k * heat.size / 100 - 1e-9)))
    threshold = np.sort(heat.ravel())[::-1][n - 1]  # the n-th largest value, written out
    np.testing.assert_array_equal(kept, heat >= threshold)


def test_random_rule_keeps_exactly_n_and_draws_tied_cells_uniformly():
    heat = np.zeros(100)
    heat[37] = 1.0  # one peak, 99 tied zeros; k = 11 % -> the peak + 10 of the zeros
    draws = np.stack([binarize_top_k(heat, 11, ties="random", seed=s) for s in range(3000)])
    assert (draws.sum(axis=1) == 11).all()
    assert draws[:, 37].all()
    freq = np.delete(draws.mean(axis=0), 37)
    p = 10 / 99
    assert np.abs(freq - p).max() < 5 * np.sqrt(p * (1 - p) / 3000)
    np.testing.assert_array_equal(binarize_top_k(heat, 11, ties="random", seed=4), draws[4])


def test_tie_rules_are_named_and_checked():
    assert TIE_RULES == ("include", "random", "first")
    with pytest.raises(ValueError, match="ties must be one of"):
        binarize_top_k(np.ones(4), 50, ties="last")
