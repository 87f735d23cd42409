"""Baselines that train no network: the threshold pipeline and the closed-form linear probe, checked against
straightforward per-image scipy / numpy implementations written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medzoo.experiment import baselines as B


def _reference_segment(x: np.ndarray, lo: float, hi: float, keep: int) -> np.ndarray:
    """One image at a time: band, drop border components, keep the largest ``keep``, scipy's hole filling."""
    out = []
    for im in x:
        lab, n = ndimage.label((im >= lo) & (im <= hi))
        border = set(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]).tolist())
        sizes = sorted(((int((lab == i).sum()), -i) for i in range(1, n + 1) if i not in border), reverse=True)
        chosen = np.isin(lab, [-i for _, i in sizes[:keep]])
        out.append(ndimage.binary_fill_holes(chosen))
    return np.stack(out)


def _random_images(seed: int, n: int = 6, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((n, size, size)), (0, 1.2, 1.2))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("keep", [1, 2, 3])
def test_segment_equals_a_per_image_scipy_pipeline(seed, keep):
    x = _random_images(seed)
    lo, hi = float(np.quantile(x, 0.05)), float(np.quantile(x, 0.5))
    np.testing.assert_array_equal(B._segment(x, lo, hi, keep), _reference_segment(x, lo, hi, keep))


def test_segment_fills_holes_and_drops_border_components():
    x = np.ones((1, 12, 12))
    x[0, 2:10, 2:6] = 0.1  # a "lung" with a bright hole
    x[0, 5, 3] = 0.9
    x[0, 0:3, 8:12] = 0.1  # dark, but touching the border
    got = B._segment(x, 0.0, 0.5, keep=2)[0]
    expected = np.zeros((12, 12), bool)
    expected[2:10, 2:6] = True
    np.testing.assert_array_equal(got, expected)


def test_mean_dice_written_out():
    rng = np.random.default_rng(3)
    pred, target = rng.random((4, 8, 8)) > 0.5, rng.random((4, 8, 8)) > 0.6
    target[2] = False  # an empty target is skipped, as the training metrics skip it
    per = [2 * (p & t).sum() / (p.sum() + t.sum()) for p, t in zip(pred, target) if t.any()]
    assert B.mean_dice(pred, target) == pytest.approx(float(np.mean(per)), abs=1e-12)


def test_otsu_threshold_maximises_the_between_class_variance():
    rng = np.random.default_rng(4)
    im = np.concatenate([rng.normal(0.2, 0.05, 500), rng.normal(0.7, 0.08, 300)]).clip(0, 1)
    t = B.otsu_threshold(im)
    edges = np.histogram_bin_edges(im, 256)[1:-1]

    def between(c: float) -> float:
        a, b = im[im <= c], im[im > c]
        return len(a) * len(b) * (a.mean() - b.mean()) ** 2

    assert between(t) == pytest.approx(max(between(c) for c in edges), rel=1e-9)
    assert 0.3 < t < 0.6


def test_fit_threshold_finds_the_band_that_separates_the_lungs():
    rng = np.random.default_rng(5)
    x = np.full((5, 32, 32), 0.7) + rng.normal(0, 0.02, (5, 32, 32))
    masks = np.zeros((5, 32, 32), bool)
    masks[:, 6:26, 4:13] = masks[:, 6:26, 19:28] = True
    x[masks] = 0.3 + rng.normal(0, 0.02, int(masks.sum()))
    x[:, 28:31, 20:26] = 0.3  # a dark bubble below the left lung, smaller than either lung
    params = B.fit_threshold(x, masks)
    assert B.mean_dice(B.predict_threshold(x, params), masks) == pytest.approx(1.0)
    assert params.lo <= 0.2
    assert 0.4 <= params.hi <= 0.6


def test_fit_threshold_adapts_to_exposure_with_otsu():
    """With exposure changing per image, no fixed band works; the per-image Otsu normalisation does."""
    masks = np.zeros((4, 32, 32), bool)
    masks[:, 6:26, 4:13] = masks[:, 6:26, 19:28] = True
    x = np.stack([np.where(m, 0.1 + g, 0.3 + 2 * g) for m, g in zip(masks, (0.0, 0.15, 0.3, 0.45))])
    params = B.fit_threshold(x, masks)
    assert params.norm in ("otsu", "percentile")
    assert B.mean_dice(B.predict_threshold(x, params), masks) == pytest.approx(1.0)


class _LinearEncoder(torch.nn.Module):
    """Two feature maps: the image itself and its square, at half resolution for the second."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, torch.nn.functional.avg_pool2d(x**2, 2)]


def _upsample2(a: np.ndarray) -> np.ndarray:
    """Bilinear x2 upsampling with half-pixel centres and edge clamping (torch's ``align_corners=False``)."""
    n = a.shape[0]
    src = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = src - i0
    rows = a[i0] * (1 - w)[:, None] + a[i1] * w[:, None]
    return rows[:, i0] * (1 - w)[None] + rows[:, i1] * w[None]


def test_probe_is_the_ridge_solution_written_out():
    rng = np.random.default_rng(6)
    x = rng.random((3, 8, 8)).astype(np.float32)
    masks = x > 0.6
    enc = _LinearEncoder()
    probe = B.fit_probe(enc, x, masks, ridge=1e-3, stride=1)
    # The same regression with numpy: features upsampled bilinearly (torch's half-pixel rule), standardised.
    pooled = (x**2).reshape(3, 4, 2, 4, 2).mean((2, 4))
    f2 = np.stack([_upsample2(p) for p in pooled])
    feats = np.stack([x.reshape(-1), f2.reshape(-1)], 1).astype(np.float64)
    z = (feats - feats.mean(0)) / feats.std(0, ddof=1)
    z = np.concatenate([z, np.ones((len(z), 1))], 1)
    w = np.linalg.solve(z.T @ z + 1e-3 * len(z) * np.eye(3), z.T @ masks.reshape(-1).astype(np.float64))
    np.testing.assert_allclose(probe["weight"].numpy(), w, rtol=1e-6, atol=1e-9)
    pred = B.predict_probe(enc, x, probe)
    np.testing.assert_array_equal(pred, (z @ w > 0.5).reshape(3, 8, 8))
    assert B.mean_dice(pred, masks) > 0.9
