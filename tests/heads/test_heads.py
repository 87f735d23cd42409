"""Every registered head: shapes, dtypes, raw logits, label names; the U-Net decoder and MedicalNet's head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medzoo.encoders import create_encoder
from medzoo.heads import (
    FeatureInfo,
    HeadArgumentError,
    MedicalNetSegHead,
    MultilabelHead,
    RegressionHead,
    create_head,
    list_heads,
)
from medzoo.heads.base import dense_activate

TINY = (8, 16, 32, 64)

# One case per registered head type: (kwargs, level).
CASES = {
    "classification": ({"num_classes": 3, "labels": ["normal", "pneumonia", "covid19"]}, "volume"),
    "multilabel": ({"labels": ["a", "b", "c", "d"], "thresholds": [0.2, 0.4, 0.6, 0.8]}, "image"),
    "regression": ({"outputs": {"geographic": [0, 8], "opacity": [0, 6]}}, "volume"),
    "segmentation": ({"num_classes": 3}, "volume"),
    "medicalnet_seg": ({"num_classes": 2}, "volume"),
    "localization": ({"labels": ["a", "b"]}, "image"),
}


@pytest.fixture(scope="module")
def encoders():
    return {os: create_encoder("resnet10", widths=TINY, output_stride=os).eval() for os in (8, 16, 32)}


def _info(enc, spatial_dims=3):
    return FeatureInfo(tuple(enc.out_channels), tuple(enc.reductions), enc.output_stride, enc.feature_dim, spatial_dims)


def test_every_registered_head_has_a_case():
    assert set(list_heads()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_head_shapes_dtypes_and_raw_logits(name, encoders):
    kwargs, level = CASES[name]
    enc = encoders[8]
    spatial = 3 if level == "volume" else 2
    head = create_head(name, _info(enc, spatial), **kwargs).eval()
    x = torch.randn(2, 1, 16, 32, 32) if spatial == 3 else torch.randn(2, 1, 32, 32)
    last = head.fc if head.kind == "vector" else (
        head.classifier if name in ("segmentation", "localization") else head[6])
    seen = {}
    last.register_forward_hook(lambda m, args, y: seen.update(x=args[0]))
    with torch.no_grad():
        feats = enc(x)
        pooled = feats[-1].flatten(2).mean(-1)
        out = head(feats, x.shape[2:]) if head.kind == "dense" else head(pooled)
    assert out.dtype == torch.float32
    assert out.shape[:2] == (2, len(head.label_names))
    assert head.num_outputs == len(head.label_names)
    if head.kind == "vector":
        assert out.shape == (2, len(head.label_names))
        # logits are exactly the affine map: no activation in forward
        expected = pooled.numpy() @ head.fc.weight.detach().numpy().T + head.fc.bias.detach().numpy()
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    else:
        divisor = {"segmentation": 1, "localization": 8}.get(name, 4)  # localization: patch grid of the last map
        expected_size = tuple(s // divisor for s in x.shape[2:])
        assert tuple(out.shape[2:]) == expected_size
        # logits are exactly the last conv's output: no activation after it
        w = last.weight.detach().numpy()[:, :, 0, 0, 0] if spatial == 3 else last.weight.detach().numpy()[:, :, 0, 0]
        expected = np.einsum("kc,bc...->bk...", w, seen["x"].numpy())
        if last.bias is not None:
            expected += last.bias.detach().numpy().reshape(1, -1, *([1] * spatial))
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_label_names():
    info = FeatureInfo((8, 8, 16, 32, 64), ((2,) * 3,) * 5, 32, 64)
    assert create_head("classification", info, num_classes=4).label_names == tuple(f"class_{i}" for i in range(4))
    assert create_head("regression", info, outputs=["x", "y"]).label_names == ("x", "y")
    assert create_head("multilabel", info, labels=["p", "q", "r"]).num_outputs == 3


@pytest.mark.parametrize(
    "name, kwargs, arg",
    [
        ("classification", {}, "num_classes"),
        ("classification", {"num_classes": 2, "labels": ["a", "b", "c"]}, "num_classes"),
        ("multilabel", {"num_classes": 3}, "labels"),
        ("multilabel", {"labels": ["a", "a"]}, "labels"),
        ("multilabel", {"labels": ["a", "b"], "thresholds": {"c": 0.1}}, "thresholds"),
        ("regression", {}, "outputs"),
        ("regression", {"outputs": {"g": [8, 0]}}, "outputs"),
        ("segmentation", {}, "num_classes"),
        ("segmentation", {"num_classes": 2, "decoder_channels": [4, 4]}, "decoder_channels"),
    ],
)
def test_bad_head_arguments_name_the_argument(name, kwargs, arg):
    info = FeatureInfo((8, 8, 16, 32, 64), ((2,) * 3,) * 5, 32, 64)
    with pytest.raises(HeadArgumentError) as err:
        create_head(name, info, **kwargs)
    assert err.value.arg == arg


@pytest.mark.parametrize("os", [8, 16, 32])
@pytest.mark.parametrize("shape", [(2, 1, 16, 32, 32), (2, 1, 17, 33, 30), (2, 1, 32, 32), (2, 1, 33, 29)])
def test_unet_decoder_output_at_input_size(encoders, os, shape):
    enc = encoders[os]
    spatial = len(shape) - 2
    head = create_head("segmentation", _info(enc, spatial), num_classes=3).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        out = head(enc(x), x.shape[2:])
    assert out.shape == (shape[0], 3, *shape[2:])


def test_unet_decoder_refuses_maps_of_the_wrong_dimensionality(encoders):
    head = create_head("segmentation", _info(encoders[32], 2), num_classes=2)
    with pytest.raises(ValueError, match="2D"):
        head(encoders[32](torch.randn(2, 1, 16, 32, 32)))


def test_medicalnet_seg_key_layout():
    head = MedicalNetSegHead(64, num_classes=2)
    keys = list(head.state_dict())
    expected = ["0.weight", "0.bias"] + [f"{i}.{k}" for i in (1,) for k in
                                         ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    expected += ["3.weight"] + [f"4.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                                                    "num_batches_tracked")] + ["6.weight"]
    assert keys == expected
    types = [type(m) for m in head]
    assert types == [torch.nn.ConvTranspose3d, torch.nn.BatchNorm3d, torch.nn.ReLU, torch.nn.Conv3d,
                     torch.nn.BatchNorm3d, torch.nn.ReLU, torch.nn.Conv3d]
    assert head[0].weight.shape == (64, 32, 2, 2, 2)
    assert head[0].stride == (2, 2, 2)
    assert head[3].weight.shape == (32, 32, 3, 3, 3)
    assert head[3].bias is None
    assert head[3].padding == (1, 1, 1)
    assert head[6].weight.shape == (2, 32, 1, 1, 1)
    assert head[6].bias is None


def test_medicalnet_seg_loads_a_medicalnet_style_state_dict():
    src = MedicalNetSegHead(64, num_classes=2)
    sd = {f"module.conv_seg.{k}": v.clone() for k, v in src.state_dict().items()}
    dst = MedicalNetSegHead(64, num_classes=2)
    dst.load_state_dict({k.removeprefix("module.conv_seg."): v for k, v in sd.items()}, strict=True)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src.state_dict()[k])


@pytest.mark.parametrize("os", [16, 32])
def test_medicalnet_seg_refuses_other_output_strides(encoders, os):
    with pytest.raises(ValueError, match="output_stride 8"):
        create_head("medicalnet_seg", _info(encoders[os]), num_classes=2)


def test_medicalnet_seg_resolution_and_activation(encoders):
    enc = encoders[8]
    head = create_head("medicalnet_seg", _info(enc), num_classes=2).eval()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        logits = head(enc(x))
    assert logits.shape == (1, 2, 4, 8, 8)
    act = head.activate(logits, x.shape[2:])
    assert act["probs"].shape == (1, 2, 16, 32, 32)
    assert act["pred"].shape == (1, 16, 32, 32)
    up = torch.nn.functional.interpolate(logits, size=(16, 32, 32), mode="trilinear", align_corners=False)
    e = np.exp(up.numpy() - up.numpy().max(1, keepdims=True))
    np.testing.assert_allclose(act["probs"].numpy(), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_classification_and_multilabel_activations():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 3.0]])
    cls = create_head("classification", FeatureInfo((1,) * 5, ((2,) * 3,) * 5, 32, 4), num_classes=3)
    out = cls.activate(logits)
    e = np.exp(logits.numpy())
    np.testing.assert_allclose(out["probs"].numpy(), e / e.sum(1, keepdims=True), rtol=1e-6)
    assert out["pred"].tolist() == [0, 2]
    ml = MultilabelHead(4, labels=["a", "b", "c"], thresholds={"a": 0.9, "c": 0.05})
    out = ml.activate(logits)
    p = 1 / (1 + np.exp(-logits.numpy()))
    np.testing.assert_allclose(out["probs"].numpy(), p, rtol=1e-6)
    assert out["pred"].numpy().tolist() == (p >= np.array([0.9, 0.5, 0.05])).astype(int).tolist()


def test_regression_scaling_and_clamp():
    head = RegressionHead(4, outputs={"geographic": [0, 8], "opacity": [0, 6], "free": None})
    y = torch.tensor([[4.0, 3.0, -2.5], [8.0, 0.0, 10.0]])
    np.testing.assert_allclose(head.scale_targets(y).numpy(), [[0.5, 0.5, -2.5], [1.0, 0.0, 10.0]])
    torch.testing.assert_close(head.unscale(head.scale_targets(y)), y)
    out = head.activate(torch.tensor([[1.5, -0.5, 7.0]]))["values"]
    np.testing.assert_allclose(out.numpy(), [[8.0, 0.0, 7.0]])  # clamped to the ranges, the free one is not


def test_dense_activate_binary():
    logits = torch.tensor([[[[-1.0, 2.0], [0.0, 0.3]]]])
    out = dense_activate(logits)
    np.testing.assert_allclose(out["probs"].numpy(), 1 / (1 + np.exp(-logits.numpy())), rtol=1e-6)
    assert out["pred"].tolist() == [[[0, 1], [1, 1]]]
