"""MultiTaskModel: routing by input kind, series padding invariance, predict, freezing, param groups, errors."""

from __future__ import annotations

import pytest
import torch

from medzoo.aggregation import base as aggregation_base
from medzoo.aggregation import create_aggregator, list_aggregators
from medzoo.encoders import create_encoder
from medzoo.heads import ClassificationHead, MedicalNetSegHead, MultilabelHead, RegressionHead, SegmentationHead
from medzoo.models import MultiTaskModel
from medzoo.models import series as series_module

TINY = (8, 16, 32, 64)


def _model(agg="attention", os=8, **kw):
    enc = create_encoder("resnet10", widths=TINY, output_stride=os)
    aggregator = create_aggregator(agg, 64) if agg else None
    heads = {
        "seg": MedicalNetSegHead(64, num_classes=2),
        "covid": ClassificationHead(aggregator.out_features if aggregator else 64, num_classes=3),
        "slices": ClassificationHead(64, num_classes=3),
        "cxr": MultilabelHead(64, labels=["a", "b"], thresholds=0.5),
        "sev": RegressionHead(64, outputs={"geographic": [0, 8]}),
    }
    levels = {"seg": "volume", "covid": "series", "slices": "slice", "cxr": "image", "sev": "image"}
    return MultiTaskModel(enc, heads, aggregator, levels=levels, **kw)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _model()


def _series(lengths, size=32):
    n = max(lengths)
    x = torch.randn(len(lengths), n, 1, size, size)
    pad = torch.tensor([[i >= length for i in range(n)] for length in lengths])
    return x, pad


def test_submodules_and_routing(model):
    assert set(dict(model.named_children())) == {"encoder", "heads", "aggregator"}
    model.eval()
    with torch.no_grad():
        vol = model(torch.randn(2, 1, 16, 32, 32))
        img = model(torch.randn(2, 1, 32, 32))
        x, pad = _series([3, 2])
        ser = model(x, pad)
        only = model(x, tasks=["covid"])  # a series-level task makes a 5-D input a series (no mask = all valid)
    assert list(vol) == ["seg"]
    assert vol["seg"].shape == (2, 2, 4, 8, 8)
    assert list(img) == ["cxr", "sev"]
    assert img["cxr"].shape == (2, 2)
    assert img["sev"].shape == (2, 1)
    assert list(ser) == ["covid", "slices"]
    assert ser["covid"].shape == (2, 3)
    assert ser["slices"].shape == (2, 3, 3)
    assert (ser["slices"][pad] == 0).all()
    assert list(only) == ["covid"]
    assert all(v.dtype == torch.float32 for d in (vol, img, ser) for v in d.values())


def test_routing_errors(model):
    with pytest.raises(KeyError, match="Did you mean.*covid"):
        model(torch.randn(1, 1, 32, 32), tasks=["covd"])
    with pytest.raises(ValueError, match="different input kinds"):
        model(torch.randn(1, 1, 32, 32), tasks=["cxr", "seg"])
    with pytest.raises(ValueError, match="image input must be"):
        model(torch.randn(1, 1, 8, 32, 32), tasks=["cxr"])
    with pytest.raises(ValueError, match="pad_mask is for series"):
        model(torch.randn(1, 1, 32, 32), torch.zeros(1, 1, dtype=torch.bool), tasks=["cxr"])


@pytest.mark.parametrize("agg", list_aggregators())
def test_padding_invariance_of_the_whole_model(agg):
    torch.manual_seed(1)
    m = _model(agg, max_items_per_chunk=4).eval()
    x, pad = _series([3, 7])
    with torch.no_grad():
        alone = m(x[:1, :3], tasks=["covid", "slices"])
        batched = m(x, pad)
    torch.testing.assert_close(batched["covid"][:1], alone["covid"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched["slices"][:1, :3], alone["slices"], atol=1e-5, rtol=1e-5)
    assert batched["covid"].shape == (2, 3)


def test_n_equals_one_and_slabs():
    m = _model("mean").eval()
    with torch.no_grad():
        one = m(torch.randn(2, 1, 1, 32, 32), torch.zeros(2, 1, dtype=torch.bool))
        slabs = m(torch.randn(2, 3, 1, 4, 16, 16), torch.tensor([[False, False, True], [False] * 3]))
    assert one["covid"].shape == (2, 3)
    assert one["slices"].shape == (2, 1, 3)
    assert slabs["covid"].shape == (2, 3)
    assert slabs["slices"].shape == (2, 3, 3)


def test_series_without_valid_item_raises(model):
    x, _ = _series([2, 2])
    with pytest.raises(ValueError, match=r"batch index 1 has no valid slice"):
        model(x, torch.tensor([[False, True], [True, True]]))


def _count_mask_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every padding-mask validation, wherever it is called from."""
    calls: list[int] = []
    original = aggregation_base.check_pad_mask

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(aggregation_base, "check_pad_mask", counting)
    monkeypatch.setattr(series_module, "check_pad_mask", counting)
    return calls


def test_the_mask_is_validated_once_per_forward(model, monkeypatch):
    model.eval()
    x, pad = _series([2, 3])
    calls = _count_mask_checks(monkeypatch)
    with torch.no_grad():
        model(x, pad)
    assert len(calls) == 1
    with torch.no_grad():
        model.aggregator(torch.randn(2, 3, 64), pad)  # a direct call still validates
    assert len(calls) == 2


def test_forward_series_encodes_once_and_equals_forward_and_slice_weights(model):
    model.eval()
    x, pad = _series([3, 2])
    calls = []
    handle = model.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            logits, weights = model.forward_series(x, pad)
        assert len(calls) == 1
        with torch.no_grad():
            ref, ref_weights = model(x, pad), model.slice_weights(x, pad)
    finally:
        handle.remove()
    assert list(logits) == ["covid", "slices"]
    for t in logits:
        torch.testing.assert_close(logits[t], ref[t], rtol=0, atol=0)
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=0)


def test_forward_series_without_series_level_task_has_no_weights(model):
    model.eval()
    x, pad = _series([2, 2])
    with torch.no_grad():
        logits, weights = model.forward_series(x, pad, tasks=["slices"])
    assert list(logits) == ["slices"]
    assert weights is None


def test_an_aggregator_must_be_a_medzoo_aggregator():
    enc = create_encoder("resnet10", widths=TINY)
    with pytest.raises(TypeError, match="medzoo.aggregation.Aggregator"):
        MultiTaskModel(enc, {"c": ClassificationHead(64, num_classes=2)}, torch.nn.Identity(), levels={"c": "series"})


def test_slice_weights_and_slice_logits(model):
    model.eval()
    x, pad = _series([2, 4])
    with torch.no_grad():
        w = model.slice_weights(x, pad)
        sl = model.slice_logits(x, pad)["covid"]
        items = model.encode_series(x, pad)
    assert w.shape == (2, 4)
    assert (w[pad] == 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    torch.testing.assert_close(sl[~pad], model.heads["covid"](items[~pad]))
    assert (sl[pad] == 0).all()


def test_predict_applies_activations_and_restores_mode(model):
    model.train()
    x = torch.randn(2, 1, 16, 32, 32)
    pred = model.predict(x)
    assert model.training
    seg = pred["seg"]
    assert seg["probs"].shape == (2, 2, 16, 32, 32)
    assert seg["pred"].shape == (2, 16, 32, 32)
    torch.testing.assert_close(seg["probs"].sum(1), torch.ones(2, 16, 32, 32))
    model.eval()
    img = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        logits = model(img)
    pred = model.predict(img)
    torch.testing.assert_close(pred["cxr"]["probs"], torch.sigmoid(logits["cxr"]))
    assert torch.equal(pred["cxr"]["pred"], (torch.sigmoid(logits["cxr"]) >= 0.5).long())
    torch.testing.assert_close(pred["sev"]["values"], (logits["sev"] * 8).clamp(0, 8))
    xs, pad = _series([2, 3])
    with torch.no_grad():
        logits = model(xs, pad)
    torch.testing.assert_close(model.predict(xs, pad)["covid"]["probs"], logits["covid"].softmax(-1))


def test_freeze_semantics():
    m = _model("mean")
    m.freeze_encoder()
    m.train()
    assert m.encoder_frozen
    assert not m.encoder.training
    assert m.heads.training
    assert all(not p.requires_grad for p in m.encoder.parameters())
    before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    x = torch.randn(2, 1, 16, 32, 32) * 3 + 1
    out = m(x)["seg"].sum() + m(torch.randn(2, 1, 32, 32) * 3)["cxr"].sum()
    out.backward()
    for k, v in m.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats (3D and 2D path) unchanged
    assert all(p.grad is None for p in m.encoder.parameters())
    assert m.heads["seg"][0].weight.grad is not None
    m.unfreeze_encoder()
    assert m.encoder.training
    assert all(p.requires_grad for p in m.encoder.parameters())
    m(x)
    assert any(not torch.equal(v, before[k]) for k, v in m.encoder.state_dict().items())


def test_param_groups(model):
    groups = model.param_groups(1e-3, head_lr_mult=100)
    assert [g["name"] for g in groups] == ["encoder", "heads"]
    assert groups[0]["lr"] == 1e-3
    assert groups[1]["lr"] == pytest.approx(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.encoder.parameters()}
    torch.optim.SGD(groups, lr=1e-3)


def test_checkpointed_model_training_step_matches_plain():
    torch.manual_seed(2)
    a = _model("attention", max_items_per_chunk=2)
    b = _model("attention", max_items_per_chunk=2, checkpoint_chunks=True)
    b.load_state_dict(a.state_dict())
    x, pad = _series([3, 4])
    for m in (a, b):
        m.train()
        out = m(x, pad)
        (out["covid"].square().sum() + out["slices"].sum()).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-4, msg=name)
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        torch.testing.assert_close(ba, bb, msg=name)


@pytest.mark.parametrize(
    "head, level, agg, match",
    [
        (SegmentationHead((8, 8, 16, 32, 64), num_classes=2), "series", True, r"tasks\.t\.level.*dense"),
        (SegmentationHead((8, 8, 16, 32, 64), num_classes=2), "slice", True, r"tasks\.t\.level.*dense"),
        (MedicalNetSegHead(64, num_classes=2), "image", False, r"tasks\.t\.level.*not 'image'"),
        (ClassificationHead(64, num_classes=2), "series", False, r"tasks\.t\.level.*needs an aggregator"),
        (ClassificationHead(64, num_classes=2), "patient", False, r"tasks\.t\.level.*unknown level"),
    ],
)
def test_construction_refuses_bad_combinations(head, level, agg, match):
    enc = create_encoder("resnet10", widths=TINY)
    with pytest.raises(ValueError, match=match):
        MultiTaskModel(enc, {"t": head}, create_aggregator("mean", 64) if agg else None, levels={"t": level})


def test_dense_series_mode_gives_the_same_outputs_in_eval(model):
    model.eval()
    x, pad = _series([2, 5, 3])
    with torch.no_grad():
        packed = model(x, pad)
        model.series_mode = "dense"
        try:
            dense = model(x, pad)
        finally:
            model.series_mode = "packed"
    for k in packed:
        torch.testing.assert_close(dense[k], packed[k], atol=1e-5, rtol=1e-5)
