"""MIL + pixel BCE losses against hand-computed values; unboxed images add no pixel loss; box sources."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from medzoo.train.weak_loc import NIH_BOX_SPACE, mil_loss, pixel_loss, rasterize_boxes, record_boxes, weak_loc_loss

LN3 = math.log(3.0)
# image 0: patch probabilities [[0.75, 0.5], [0.75, 0.25]]; image 1: all 0.25
LOGITS = torch.tensor([[[[LN3, 0.0], [LN3, -LN3]]], [[[-LN3, -LN3], [-LN3, -LN3]]]], dtype=torch.float64)
TARGETS = torch.tensor([[1.0], [0.0]], dtype=torch.float64)


def _top_left_box():
    return rasterize_boxes([[(0, (0.0, 0.0, 1.0, 1.0))], []], num_classes=1, grid=(2, 2), source_size=(2, 2))


def test_mil_loss_literal():
    # noisy-OR: P0 = 1 - 0.25*0.5*0.25*0.75 = 0.9765625 (target 1); P1 = 1 - 0.75**4 = 0.68359375 (target 0)
    expected = (-math.log(0.9765625) - math.log(0.31640625)) / 2
    assert expected == pytest.approx(0.5872224, abs=1e-6)
    assert mil_loss(LOGITS, TARGETS).item() == pytest.approx(expected, abs=1e-10)


def test_mil_loss_masks_nan():
    t = torch.tensor([[1.0], [float("nan")]], dtype=torch.float64)
    assert mil_loss(LOGITS, t).item() == pytest.approx(-math.log(0.9765625), abs=1e-10)


def test_pixel_loss_literal_balanced_and_plain():
    masks, has_box = _top_left_box()
    assert masks[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]] and has_box.tolist() == [[True], [False]]
    inside = -math.log(0.75)  # p = 0.75, target 1
    outside = [-math.log(0.5), -math.log(0.25), -math.log(0.75)]  # p = 0.5, 0.75, 0.25, target 0
    balanced = 0.5 * (inside + sum(outside) / 3)
    plain = (inside + sum(outside)) / 4
    assert balanced == pytest.approx(0.5383617, abs=1e-6) and plain == pytest.approx(0.6637015, abs=1e-6)
    assert pixel_loss(LOGITS, masks.double(), has_box).item() == pytest.approx(balanced, abs=1e-10)
    assert pixel_loss(LOGITS, masks.double(), has_box, balanced=False).item() == pytest.approx(plain, abs=1e-10)


def test_mixed_loss_literal():
    masks, has_box = _top_left_box()
    out = weak_loc_loss(LOGITS, TARGETS, masks.double(), has_box, box_weight=0.5)
    assert out["loss"].item() == pytest.approx(0.5872224 + 0.5 * 0.5383617, abs=1e-6)
    assert out["loss"].item() == pytest.approx((out["mil"] + 0.5 * out["pixel"]).item(), abs=1e-12)


def test_images_without_boxes_contribute_no_pixel_loss():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    boxes = [[(1, (0.0, 0.0, 2.0, 3.0)), (2, (1.0, 1.0, 3.0, 3.0))], [], [], []]
    masks, has_box = rasterize_boxes(boxes, 3, (5, 5), (5, 5))
    pix = pixel_loss(logits, masks.double(), has_box)
    pix.backward()
    assert logits.grad[1:].abs().sum().item() == 0.0  # unboxed images get exactly zero gradient
    assert logits.grad[0, 0].abs().sum().item() == 0.0  # so does an unboxed class of a boxed image
    assert logits.grad[0, 1:].abs().sum().item() > 0
    changed = logits.detach().clone()
    changed[1:] = torch.randn(3, 3, 5, 5, dtype=torch.float64) * 10
    assert pixel_loss(changed, masks.double(), has_box).item() == pix.item()
    # a batch with no boxes at all: pixel loss exactly 0, total == MIL
    targets = torch.tensor([[1.0, 0.0, 1.0]] * 4, dtype=torch.float64)
    for m, h in ((None, None), (torch.zeros_like(masks).double(), torch.zeros_like(has_box))):
        out = weak_loc_loss(logits, targets, m, h, box_weight=3.0)
        assert out["pixel"].item() == 0.0 and out["loss"].item() == out["mil"].item()


def test_rasterize_scales_nih_boxes_to_the_grid():
    masks, has_box = rasterize_boxes([[(0, (512.0, 0.0, 512.0, 256.0))]], 2, (4, 4), NIH_BOX_SPACE)
    assert masks[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert has_box.tolist() == [[True, False]] and masks[0, 1].sum() == 0
    with pytest.raises(ValueError, match="class index 5"):
        rasterize_boxes([[(5, (0, 0, 1, 1))]], 2, (4, 4), NIH_BOX_SPACE)


def test_record_boxes_nih_and_vindr():
    labels = ["Nodule", "Infiltration", "Effusion"]
    nih = SimpleNamespace(id="a.png", meta={"boxes": [{"label": "Infiltrate", "box": (1, 2, 3, 4)},
                                                       {"label": "Nodule", "box": (5, 6, 7, 8)}]})
    assert record_boxes(nih, labels) == [(1, (1.0, 2.0, 3.0, 4.0)), (0, (5.0, 6.0, 7.0, 8.0))]
    vindr = SimpleNamespace(id="v1", meta={"boxes": {"R1": [{"label": "Pleural effusion", "box": (10, 20, 30, 60)}],
                                                     "R2": [], "R3": [{"label": "Nodule/Mass", "box": (0, 0, 5, 5)}]}})
    with pytest.raises(ValueError, match="Nodule/Mass"):
        record_boxes(vindr, labels, source="vindr")
    assert record_boxes(vindr, labels, source="vindr", unknown="drop") == [(2, (10.0, 20.0, 20.0, 40.0))]
    assert record_boxes(SimpleNamespace(id="n", meta={}), labels) == []
