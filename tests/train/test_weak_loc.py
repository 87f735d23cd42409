"""MIL + pixel BCE losses against hand-computed values; unboxed images add no pixel loss; box sources."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

NIH_BOX_SPACE = (1024.0, 1024.0)


# Imported lazily (see tests/heads/test_localization_head.py): medzoo.train.weak_loc imports the localisation head,
# whose registration must not happen while tests are collected.
def _w():
    import medzoo.train.weak_loc as w

    return w


def mil_loss(*a, **k):
    return _w().mil_loss(*a, **k)


def pixel_loss(*a, **k):
    return _w().pixel_loss(*a, **k)


def rasterize_boxes(*a, **k):
    return _w().rasterize_boxes(*a, **k)


def record_boxes(*a, **k):
    return _w().record_boxes(*a, **k)


def weak_loc_loss(*a, **k):
    return _w().weak_loc_loss(*a, **k)

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
    assert masks[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert has_box.tolist() == [[True], [False]]
    inside = -math.log(0.75)  # p = 0.75, target 1
    outside = [-math.log(0.5), -math.log(0.25), -math.log(0.75)]  # p = 0.5, 0.75, 0.25, target 0
    balanced = 0.5 * (inside + sum(outside) / 3)
    plain = (inside + sum(outside)) / 4
    assert balanced == pytest.approx(0.5383617, abs=1e-6)
    assert plain == pytest.approx(0.6637015, abs=1e-6)
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
        assert out["pixel"].item() == 0.0
        assert out["loss"].item() == out["mil"].item()


def test_rasterize_scales_nih_boxes_to_the_grid():
    assert _w().NIH_BOX_SPACE == NIH_BOX_SPACE
    masks, has_box = rasterize_boxes([[(0, (512.0, 0.0, 512.0, 256.0))]], 2, (4, 4), NIH_BOX_SPACE)
    assert masks[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert has_box.tolist() == [[True, False]]
    assert masks[0, 1].sum() == 0
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


def test_record_boxes_from_the_vindr_reader(tmp_path):
    import dataclasses

    pytest.importorskip("pydicom")
    from medzoo.data.readers import open_dataset
    from medzoo.data.readers.vindr import VINDR_LABELS
    from medzoo.data.synth._common import SIZES
    from medzoo.data.synth.vindr import write_vindr

    size = dataclasses.replace(SIZES["tiny"], nih=40, cxr_px=32)
    root = write_vindr(tmp_path / "vindr", 0, size)
    man = open_dataset("vindr-cxr", root)
    rows = [line.split(",") for line in (root / "train.csv").read_text().splitlines()[1:]]
    boxed_rows = [r for r in rows if r[1] != "No finding"]
    got = [(rec, record_boxes(rec, VINDR_LABELS, source="vindr")) for rec in man.records]
    assert sum(len(b) for _, b in got) == len(boxed_rows) > 0
    by_id = {rec.id: b for rec, b in got}
    for r in boxed_rows:  # each CSV row arrives as (class index, (x, y, w, h)) of its image
        x0, y0, x1, y1 = (float(v) for v in r[4:8])
        box = tuple(round(v, 4) for v in (x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)))
        assert (VINDR_LABELS.index(r[1]), box) in [(k, tuple(round(v, 4) for v in b)) for k, b in by_id[r[0]]]
    masks, has_box = rasterize_boxes([b for _, b in got], len(VINDR_LABELS), (8, 8), (32, 32))
    assert has_box.sum() > 0
    assert masks.sum() > 0
