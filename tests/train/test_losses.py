"""Losses: NaN masking, reductions, focal/regression formulas, label downsampling and Dice against independent maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from monai.losses import DiceCELoss as MonaiDiceCELoss
from monai.losses import DiceLoss as MonaiDiceLoss

from medzoo.train.losses import (
    LOSSES,
    DiceCELoss,
    FocalLoss,
    MaskedBCELoss,
    count_valid,
    dice_loss,
    downsample_labels,
    focal_bce,
    focal_ce,
    masked_bce,
    masked_ce,
    masked_huber,
    masked_mse,
    seg_ce,
)

NAN = float("nan")


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _nan_targets(gen: torch.Generator, shape: tuple[int, ...], p_nan: float = 0.3) -> torch.Tensor:
    t = (torch.rand(shape, generator=gen) > 0.5).float()
    t[torch.rand(shape, generator=gen) < p_nan] = NAN
    return t


def _np_bce(x: np.ndarray, t: np.ndarray, pw: np.ndarray | None = None) -> np.ndarray:
    pw = np.ones_like(x) if pw is None else np.broadcast_to(pw, x.shape)
    p = 1 / (1 + np.exp(-x))
    return -(pw * t * np.log(p) + (1 - t) * np.log(1 - p))


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


# ----------------------------------------------------------------------------------------------- masked BCE
def test_masked_bce_matches_numpy_on_valid_entries(gen):
    logits = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    targets = _nan_targets(gen, (6, 4)).double()
    pw = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    x, t = logits.numpy(), targets.numpy()
    valid = ~np.isnan(t)
    expected = _np_bce(x, np.nan_to_num(t), pw.numpy())[valid].mean()
    assert masked_bce(logits, targets, pw).item() == pytest.approx(expected, rel=1e-10)
    assert masked_bce(logits, targets, pw, reduction="sum").item() == pytest.approx(
        _np_bce(x, np.nan_to_num(t), pw.numpy())[valid].sum(), rel=1e-10)
    none = masked_bce(logits, targets, pw, reduction="none")
    assert none.shape == (6, 4)
    assert torch.all(none[~torch.from_numpy(valid)] == 0)


def test_masked_bce_ignores_nan_entries_and_their_gradients(gen):
    logits = torch.randn(5, 3, generator=gen, requires_grad=True)
    targets = _nan_targets(gen, (5, 3))
    loss = masked_bce(logits, targets)
    loss.backward()
    nan = torch.isnan(targets)
    assert nan.any()
    assert torch.all(logits.grad[nan] == 0)
    assert torch.all(logits.grad[~nan] != 0)
    changed = logits.detach().clone()
    changed[nan] = 100.0  # values at unknown entries must not matter
    assert masked_bce(changed, targets).item() == pytest.approx(loss.item(), rel=1e-6)


def test_all_nan_batch_gives_zero_loss_with_grad(gen):
    logits = torch.randn(3, 2, generator=gen, requires_grad=True)
    for fn, tgt in [(masked_bce, torch.full((3, 2), NAN)), (masked_ce, torch.full((3,), NAN)),
                    (masked_mse, torch.full((3, 2), NAN)), (focal_bce, torch.full((3, 2), NAN))]:
        loss = fn(logits, tgt)
        assert loss.item() == 0.0
        assert loss.grad_fn is not None
        other = (logits**2).mean()
        (loss + other).backward()
        assert torch.isfinite(logits.grad).all()
        logits.grad = None
    loss = masked_bce(logits, torch.full((3, 2), NAN))
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_masked_bce_rejects_bad_input():
    with pytest.raises(ValueError, match="must match"):
        masked_bce(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masked_bce(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]))
    with pytest.raises(ValueError, match="pos_weight"):
        masked_bce(torch.zeros(1, 2), torch.zeros(1, 2), pos_weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="reduction"):
        masked_bce(torch.zeros(1, 2), torch.zeros(1, 2), reduction="avg")


# ------------------------------------------------------------------------------------------------ masked CE
def test_masked_ce_weighted_mean_matches_numpy(gen):
    logits = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    targets = torch.tensor([0.0, 2.0, NAN, 1.0, 2.0, NAN, 0.0, 2.0], dtype=torch.float64)
    w = np.array([0.5, 1.0, 2.0])
    valid = ~np.isnan(targets.numpy())
    y = targets.numpy()[valid].astype(int)
    nll = -_np_log_softmax(logits.numpy()[valid])[np.arange(len(y)), y]
    assert masked_ce(logits, targets).item() == pytest.approx(nll.mean(), rel=1e-10)
    assert masked_ce(logits, targets, w).item() == pytest.approx((w[y] * nll).sum() / w[y].sum(), rel=1e-10)
    assert masked_ce(logits, targets, w, reduction="sum").item() == pytest.approx((w[y] * nll).sum(), rel=1e-10)
    assert count_valid(targets, class_weight=w).item() == pytest.approx(w[y].sum())
    assert count_valid(targets).item() == valid.sum()


def test_masked_ce_checks_class_targets():
    with pytest.raises(ValueError, match="integers"):
        masked_ce(torch.zeros(2, 3), torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        masked_ce(torch.zeros(2, 3), torch.tensor([3.0, NAN]))
    with pytest.raises(ValueError, match=r"logits \[B, K\]"):
        masked_ce(torch.zeros(2, 3), torch.zeros(3))
    assert masked_ce(torch.zeros(2, 3), torch.tensor([1, 2])).item() == pytest.approx(math.log(3))


def test_sum_reduction_over_global_count_equals_full_batch_mean(gen):
    """DDP: two shards normalised by the global valid count add up to the full-batch mean."""
    logits = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    targets = _nan_targets(gen, (8, 5)).double()
    total = count_valid(targets[:4]) + count_valid(targets[4:])
    sharded = sum(masked_bce(logits[s], targets[s], reduction="sum") / total for s in (slice(0, 4), slice(4, 8)))
    assert sharded.item() == pytest.approx(masked_bce(logits, targets).item(), rel=1e-12)


# --------------------------------------------------------------------------------------------------- focal
def test_focal_bce_formula_and_gamma_zero(gen):
    logits = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    targets = _nan_targets(gen, (4, 3)).double()
    assert focal_bce(logits, targets, gamma=0.0).item() == pytest.approx(masked_bce(logits, targets).item())
    x, t = logits.numpy(), targets.numpy()
    valid = ~np.isnan(t)
    x, t = x[valid], t[valid]
    p = 1 / (1 + np.exp(-x))
    pt = np.where(t == 1, p, 1 - p)
    at = np.where(t == 1, 0.25, 0.75)
    expected = (-at * (1 - pt) ** 2 * np.log(pt)).mean()
    assert focal_bce(logits, targets, gamma=2.0, alpha=0.25).item() == pytest.approx(expected, rel=1e-10)
    assert FocalLoss("binary", 2.0, 0.25)(logits, targets).item() == pytest.approx(expected, rel=1e-10)


def test_focal_ce_formula_and_gamma_zero(gen):
    logits = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    targets = torch.tensor([0.0, 3.0, NAN, 1.0, 2.0, 3.0], dtype=torch.float64)
    w = [1.0, 2.0, 0.5, 1.5]
    assert focal_ce(logits, targets, gamma=0.0, alpha=w).item() == pytest.approx(masked_ce(logits, targets, w).item())
    valid = ~np.isnan(targets.numpy())
    y = targets.numpy()[valid].astype(int)
    logp = _np_log_softmax(logits.numpy()[valid])[np.arange(len(y)), y]
    expected = (-((1 - np.exp(logp)) ** 2) * logp).mean()
    assert focal_ce(logits, targets, gamma=2.0).item() == pytest.approx(expected, rel=1e-10)
    assert FocalLoss("multiclass", 2.0)(logits, targets).item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="mode"):
        FocalLoss("multilabel")


# ---------------------------------------------------------------------------------------------- regression
def test_masked_mse_and_huber_match_numpy(gen):
    preds = torch.randn(5, 2, generator=gen, dtype=torch.float64) * 3
    targets = torch.randn(5, 2, generator=gen, dtype=torch.float64) * 3
    targets[1, 0] = targets[3, 1] = NAN
    valid = ~np.isnan(targets.numpy())
    e = (preds.numpy() - targets.numpy())[valid]
    assert masked_mse(preds, targets).item() == pytest.approx((e**2).mean(), rel=1e-10)
    delta = 1.5
    hub = np.where(np.abs(e) <= delta, 0.5 * e**2, delta * (np.abs(e) - 0.5 * delta))
    assert masked_huber(preds, targets, delta).item() == pytest.approx(hub.mean(), rel=1e-10)
    assert LOSSES.get("huber")(delta=delta)(preds, targets).item() == pytest.approx(hub.mean(), rel=1e-10)


# -------------------------------------------------------------------------------------- label downsampling
@pytest.mark.parametrize("shape,size", [((4,), (3,)), ((8,), (3,)), ((12,), (5,)), ((9, 7), (4, 2)),
                                        ((16, 12, 10), (4, 3, 3)), ((14, 28, 28), (4, 7, 7)), ((5, 6, 7), (5, 1, 3))])
def test_downsample_labels_matches_scipy_zoom_order0(shape, size):
    rng = np.random.default_rng(sum(shape))
    labels = rng.integers(-1, 4, size=shape)
    zoom = [o / i for o, i in zip(size, shape)]
    expected = ndi.zoom(labels, zoom, order=0)
    assert expected.shape == size
    got = downsample_labels(torch.from_numpy(labels)[None, None], size)[0, 0]
    np.testing.assert_array_equal(got.numpy(), expected)


def test_downsample_labels_random_sizes_against_scipy():
    """scipy's default mode='constant' turns float round-off past the last voxel into 0 (e.g. 31 -> 30); we clamp to
    the edge, which is scipy with mode='nearest'."""
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(60):
        shape = tuple(int(s) for s in rng.integers(2, 40, size=3))
        size = tuple(max(1, int(round(s * f))) for s, f in zip(shape, rng.uniform(0.1, 1.0, size=3)))
        zoom = [o / i for o, i in zip(size, shape)]
        labels = rng.integers(0, 5, size=shape)
        expected = ndi.zoom(labels, zoom, order=0, mode="nearest")
        if expected.shape != size:  # scipy's own rounding of the output shape; not our concern
            continue
        np.testing.assert_array_equal(downsample_labels(torch.from_numpy(labels), size).numpy(), expected)
        checked += 1
    assert checked >= 40


def test_seg_ce_downsamples_labels_and_ignores(gen):
    logits = torch.randn(2, 3, 4, 4, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 3, (2, 16, 16, 16), generator=gen)
    small = np.stack([ndi.zoom(lab, 0.25, order=0) for lab in labels.numpy()])
    ref = torch.nn.functional.cross_entropy(logits, torch.from_numpy(small), ignore_index=-1)
    assert seg_ce(logits, labels, match_size=True).item() == pytest.approx(ref.item(), rel=1e-10)
    assert seg_ce(logits, labels[:, None], match_size=True).item() == pytest.approx(ref.item(), rel=1e-10)
    with pytest.raises(ValueError, match="match_size=True"):
        seg_ce(logits, labels)
    with pytest.raises(ValueError, match="integers"):
        seg_ce(logits, torch.full((2, 4, 4, 4), 5))
    n_valid = count_valid(torch.from_numpy(small), ignore_index=-1)
    summed = seg_ce(logits, labels, match_size=True, reduction="sum") / n_valid
    assert summed.item() == pytest.approx(ref.item(), rel=1e-10)


# ---------------------------------------------------------------------------------------------------- Dice
def _np_soft_dice_loss(probs: np.ndarray, onehot: np.ndarray, squared: bool, eps: float) -> float:
    axes = tuple(range(2, probs.ndim))
    inter = (probs * onehot).sum(axes)
    den = (probs**2).sum(axes) + (onehot**2).sum(axes) if squared else probs.sum(axes) + onehot.sum(axes)
    return float((1 - (2 * inter + eps) / (den + eps)).mean())


@pytest.mark.parametrize("squared", [True, False])
def test_dice_loss_matches_numpy_and_monai(gen, squared):
    logits = torch.randn(2, 3, 6, 6, 6, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 6, 6, 6), generator=gen)
    probs = torch.softmax(logits, 1).numpy()
    onehot = np.moveaxis(np.eye(3)[labels.numpy()], -1, 1)
    ours = dice_loss(logits, labels, squared=squared, smooth=1e-5).item()
    assert ours == pytest.approx(_np_soft_dice_loss(probs, onehot, squared, 1e-5), rel=1e-10)
    monai = MonaiDiceLoss(softmax=True, to_onehot_y=True, squared_pred=squared)(logits, labels[:, None])
    assert ours == pytest.approx(monai.item(), rel=1e-6)  # MONAI builds a float32 one-hot: ~1e-8 differences
    # one-hot targets give the same value
    assert dice_loss(logits, torch.from_numpy(onehot), squared=squared).item() == pytest.approx(ours, rel=1e-12)


def test_dice_loss_options_against_monai(gen):
    logits = torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (3, 1, 5, 5), generator=gen)
    for kw, mkw in [(dict(include_background=False), dict(include_background=False)),
                    (dict(batch=True), dict(batch=True))]:
        ours = dice_loss(logits, labels, **kw).item()
        ref = MonaiDiceLoss(softmax=True, to_onehot_y=True, squared_pred=True, **mkw)(logits, labels).item()
        assert ours == pytest.approx(ref, rel=1e-6), kw
    multi = (torch.rand(3, 4, 5, 5, generator=gen) > 0.5).double()
    ref = MonaiDiceLoss(sigmoid=True, squared_pred=True)(logits, multi).item()
    assert dice_loss(logits, multi, sigmoid=True).item() == pytest.approx(ref, rel=1e-6)


def test_dice_loss_ignore_index_and_match_size(gen):
    logits = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 2, (1, 8, 8), generator=gen)
    labels[0, :3] = -1
    small = torch.from_numpy(ndi.zoom(labels[0].numpy(), 0.5, order=0))[None]
    keep = (small != -1).numpy()[:, None]
    probs = torch.softmax(logits, 1).numpy() * keep
    onehot = np.moveaxis(np.eye(2)[small.clamp(min=0).numpy()], -1, 1) * keep
    ours = dice_loss(logits, labels, ignore_index=-1, match_size=True).item()
    assert ours == pytest.approx(_np_soft_dice_loss(probs, onehot, True, 1e-5), rel=1e-10)
    with pytest.raises(ValueError, match="match_size"):
        dice_loss(logits, labels)


def test_dice_ce_is_weighted_sum_and_registry(gen):
    logits = torch.randn(2, 3, 4, 4, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 4, 4, 4), generator=gen)
    w = [1.0, 2.0, 3.0]
    loss = DiceCELoss(dice_weight=0.3, ce_weight=0.7, class_weight=w, squared=False)(logits, labels)
    expected = 0.3 * dice_loss(logits, labels, squared=False) + 0.7 * seg_ce(logits, labels, class_weight=w)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert {"bce", "ce", "dice", "dice_ce", "focal", "huber", "mse", "seg_ce"} <= set(LOSSES.list())
    with pytest.raises(KeyError, match="dice"):
        LOSSES.get("dices")
    m = MaskedBCELoss(pos_weight=[1.0, 2.0]).double()
    assert m.pos_weight.dtype == torch.float64
    assert "pos_weight" not in m.state_dict()


def _hand_dice_loss(logits: torch.Tensor, onehot: torch.Tensor, valid: torch.Tensor, squared: bool) -> torch.Tensor:
    """The hand-written soft Dice this module used before it wrapped MONAI: masked probabilities, sums, the ratio."""
    probs = torch.softmax(logits, dim=1) * valid
    onehot = onehot * valid
    dims = list(range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    den = (probs**2).sum(dims) + (onehot**2).sum(dims) if squared else probs.sum(dims) + onehot.sum(dims)
    return (1 - (2 * inter + 1e-5) / (den + 1e-5)).mean()


@pytest.mark.parametrize("squared", [True, False])
def test_dice_loss_value_and_gradient_equal_the_previous_hand_written_loss(gen, squared):
    logits = torch.randn(2, 3, 5, 6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(-1, 3, (2, 5, 6, 4), generator=gen)
    valid = (labels != -1)[:, None].double()
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), 3).movedim(-1, 1).double()
    ref = _hand_dice_loss(logits, onehot, valid, squared)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    ours = dice_loss(logits, labels, squared=squared, ignore_index=-1)
    (our_grad,) = torch.autograd.grad(ours, logits)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-10, atol=1e-14)
    assert torch.all(our_grad.movedim(1, -1)[labels == -1] == 0)


def test_dice_ce_equals_monai_dice_ce_without_ignored_voxels_or_class_weights(gen):
    logits = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 6, 5), generator=gen)
    ours = DiceCELoss(dice_weight=0.4, ce_weight=0.6)(logits, labels)
    ref = MonaiDiceCELoss(softmax=True, to_onehot_y=True, squared_pred=True, lambda_dice=0.4, lambda_ce=0.6)
    assert ours.item() == pytest.approx(ref(logits, labels).item(), rel=1e-6)  # MONAI's one-hot is float32


def test_dice_loss_refuses_a_softmax_over_one_channel(gen):
    logits = torch.randn(2, 1, 4, 4, generator=gen)
    with pytest.raises(ValueError, match="sigmoid=True"):
        dice_loss(logits, torch.zeros(2, 4, 4, dtype=torch.long))
