"""The encoder contract, checked for every registered ResNet encoder (the default run keeps one per block type, the
other depths are slow); DenseNet: test_densenet.py."""

from __future__ import annotations

import math

import pytest
import torch

from medzoo.encoders import create_encoder, list_encoders
from medzoo.encoders.base import Encoder
from tests.helpers import TINY_WIDTHS, randomize_bn, representatives

ENCODERS = list_encoders("resnet*")  # ResNet-specific checks; the DenseNet baseline: test_densenet.py
STRIDES = (32, 16, 8)
_cache: dict = {}


def tiny(name: str, output_stride: int = 32, in_channels: int = 1):
    """Build once per configuration; tests that train take a copy via a fresh build."""
    key = (name, output_stride, in_channels)
    if key not in _cache:
        torch.manual_seed(0)
        _cache[key] = randomize_bn(create_encoder(name, output_stride=output_stride, widths=TINY_WIDTHS,
                                                  in_channels=in_channels)).eval()
    return _cache[key]


def test_registry_names():
    assert ENCODERS == [f"resnet{d}" for d in (10, 18, 34, 50, 101, 152, 200)]


@pytest.mark.parametrize("name", ENCODERS)
def test_protocol_and_architecture(name):
    enc = tiny(name)
    assert isinstance(enc, Encoder)
    arch = enc.architecture()
    assert arch["encoder"] == name
    assert arch["widths"] == list(TINY_WIDTHS)
    expected_shortcut = "A" if name in ("resnet18", "resnet34") else "B"
    assert enc.shortcut == expected_shortcut
    expansion = 4 if arch["block"] == "bottleneck" else 1
    assert enc.out_channels == (8, 8 * expansion, 16 * expansion, 32 * expansion, 64 * expansion)
    assert enc.feature_dim == enc.out_channels[-1]


@pytest.mark.parametrize("output_stride", STRIDES)
@pytest.mark.parametrize("name", representatives(ENCODERS))
def test_contract_3d_and_2d(name, output_stride):
    enc = tiny(name, output_stride)
    expected_red = (2, 4, 8, min(16, output_stride), output_stride)
    assert [r[0] for r in enc.reductions] == list(expected_red)
    vol, img = torch.randn(1, 1, 16, 32, 48), torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        feats3, feats2 = enc(vol), enc(img)
    assert len(feats3) == len(feats2) == 5
    for f3, f2, ch, red in zip(feats3, feats2, enc.out_channels, enc.reductions):
        assert f3.shape == (1, ch, *(math.ceil(s / r) for s, r in zip(vol.shape[2:], red)))
        assert f2.shape == (2, ch, *(math.ceil(s / r) for s, r in zip(img.shape[2:], red[1:])))
        assert f3.dtype == f2.dtype == torch.float32


@pytest.mark.parametrize("output_stride", STRIDES)
@pytest.mark.parametrize("name", representatives(ENCODERS))
def test_2d_path_equals_3d_on_depth_one(name, output_stride):
    enc = tiny(name, output_stride)
    x = torch.randn(2, 1, 40, 32)
    with torch.no_grad():
        f2, f3 = enc(x), enc(x.unsqueeze(2))
    for a, b in zip(f2, f3):
        assert b.shape[2] == 1
        assert_close_scaled(a, b.squeeze(2), 1e-5)


def assert_close_scaled(a, b, tol, msg=""):
    """max |a - b| <= tol * max(1, max |b|): deep random-init ResNets reach activations of 1e5, where float32
    summation order alone moves the last digits; relative to the map's own scale the paths agree to ``tol``."""
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= tol * scale, f"{msg} max abs diff {err:.3g} exceeds {tol:g} x scale {scale:.3g}"


@pytest.mark.parametrize("name", representatives(["resnet10", "resnet18", "resnet50"]))
def test_2d_path_equals_3d_in_training_mode(name):
    """Batch statistics (train mode) agree too, and so do the running statistics they update."""
    enc2, enc3 = (randomize_bn(create_encoder(name, widths=TINY_WIDTHS, output_stride=8)) for _ in range(2))
    enc3.load_state_dict(enc2.state_dict())
    x = torch.randn(4, 1, 48, 48)
    f2, f3 = enc2.train()(x), enc3.train()(x.unsqueeze(2))
    for a, b in zip(f2, f3):
        torch.testing.assert_close(a, b.squeeze(2), atol=1e-4, rtol=1e-4)
    for (k, a), b in zip(enc2.state_dict().items(), enc3.state_dict().values()):
        if "running" in k or "num_batches" in k:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", representatives(ENCODERS))
def test_gradients_2d_equal_3d(name):
    enc = tiny(name, 8)
    x = torch.randn(2, 1, 32, 32)
    grads = []
    for inp in (x, x.unsqueeze(2)):
        enc.zero_grad()
        out = enc(inp)
        sum((f.float() ** 2).mean() for f in out).backward()
        grads.append({k: p.grad.clone() for k, p in enc.named_parameters()})
    g2, g3 = grads
    for key, grad in g3.items():
        assert_close_scaled(g2[key], grad, 1e-5, msg=key)
        if grad.dim() == 5 and grad.shape[2] > 1:  # outer depth taps only meet zero padding
            outer = torch.cat([grad[:, :, : grad.shape[2] // 2], grad[:, :, grad.shape[2] // 2 + 1:]], dim=2)
            assert outer.abs().max() == 0, key
    assert g3["conv1.weight"].abs().sum() > 0
    enc.zero_grad(set_to_none=True)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", representatives(ENCODERS))
def test_in_channels(name, in_channels):
    enc = tiny(name, 32, in_channels)
    assert enc.conv1.weight.shape[1] == in_channels
    with torch.no_grad():
        assert enc(torch.randn(1, in_channels, 16, 16, 16))[-1].shape[1] == enc.feature_dim
        assert enc(torch.randn(1, in_channels, 16, 16))[-1].shape[1] == enc.feature_dim
    with pytest.raises(ValueError, match=f"expected {in_channels} input channel"):
        enc(torch.randn(1, in_channels + 1, 16, 16))


def test_output_stride_8_is_medicalnet_dilation():
    enc = tiny("resnet50", 8)
    convs3 = [m for m in enc.layer3.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] == 3]
    convs4 = [m for m in enc.layer4.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] == 3]
    assert len(convs3) == 6 and len(convs4) == 3  # every block, not only the first
    assert all(c.dilation == c.padding == (2, 2, 2) and c.stride == (1, 1, 1) for c in convs3)
    assert all(c.dilation == c.padding == (4, 4, 4) and c.stride == (1, 1, 1) for c in convs4)
    assert enc.layer3[0].downsample[0].stride == (1, 1, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride must be one of"):
        create_encoder("resnet10", output_stride=4)
    with pytest.raises(KeyError, match="resnet18"):
        create_encoder("resnet81")
    with pytest.raises(ValueError, match="widths must be four"):
        create_encoder("resnet10", widths=(8, 16))
    with pytest.raises(ValueError, match=r"image \[B, C, H, W\] or a volume"):
        tiny("resnet10")(torch.zeros(1, 1, 2, 4, 8, 8))


def test_state_dict_keys_are_monais():
    """Parameter names are MONAI's own (and so MedicalNet's without ``module.``)."""
    from monai.networks.nets import ResNet

    ref = ResNet("basic", [1, 1, 1, 1], list(TINY_WIDTHS), n_input_channels=1, conv1_t_stride=2, shortcut_type="B",
                 bias_downsample=False, feed_forward=False)
    assert set(tiny("resnet10").state_dict()) == set(ref.state_dict())


def test_reuse_2d_weights_equals_separate_calls():
    """Shared sliced weights across calls (series chunks) give the same outputs, gradients and BN statistics."""
    xs = [torch.randn(3, 1, 32, 32), torch.randn(2, 1, 32, 32)]
    results = []
    for reuse in (False, True):
        torch.manual_seed(0)
        enc = randomize_bn(create_encoder("resnet18", widths=TINY_WIDTHS)).train()
        with enc.reuse_2d_weights() if reuse else torch.enable_grad():
            outs = [enc(x)[-1] for x in xs]
        sum(o.square().mean() for o in outs).backward()
        results.append((outs, {k: p.grad for k, p in enc.named_parameters()}, enc.state_dict()))
    (o1, g1, s1), (o2, g2, s2) = results
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], atol=1e-6, rtol=1e-5, msg=k)
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], atol=1e-6, rtol=1e-6, msg=k)
    assert s1["bn1.num_batches_tracked"].item() == 2
