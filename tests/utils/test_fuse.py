"""fuse_bn: outputs unchanged (eval mode) for volumes and images; the fold maths checked by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medzoo.encoders import create_encoder
from medzoo.heads import ClassificationHead
from medzoo.models import MultiTaskModel
from medzoo.utils import find_conv_bn_pairs, fold_conv_bn, fuse_bn
from tests.helpers import TINY_WIDTHS, count_bn, randomize_bn


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal within 1e-5 of the reference's scale (fp32 rounding through up to 50 folded layers)."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("name", ["resnet10", "resnet18", "resnet50"])
def test_fused_encoder_matches_volume_and_2d_path(name):
    enc = randomize_bn(create_encoder(name, widths=TINY_WIDTHS))
    fused = fuse_bn(enc)
    assert count_bn(fused) == 0, "original untouched, copy fully fused"
    assert count_bn(enc) > 0, "original untouched, copy fully fused"
    vol, img = torch.randn(1, 1, 16, 32, 32), torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        for x in (vol, img):
            for a, b in zip(enc(x), fused(x)):
                _close(b, a)


def test_fused_2d_path_equals_fused_3d_on_depth_one():
    enc = fuse_bn(randomize_bn(create_encoder("resnet18", widths=TINY_WIDTHS)))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        for a, b in zip(enc(x), enc(x.unsqueeze(2))):
            _close(a, b.squeeze(2))


def test_fuse_bn_output_stride_8_and_multitask_model():
    enc = randomize_bn(create_encoder("resnet10", widths=TINY_WIDTHS, output_stride=8))
    model = MultiTaskModel(enc, {"cls": ClassificationHead(64, num_classes=3)}, levels={"cls": "image"}).eval()
    fused = fuse_bn(model)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        _close(fused(x)["cls"], model(x)["cls"])
    assert not fused.training
    assert count_bn(fused) == 0


def test_fold_conv_bn_by_hand():
    conv = nn.Conv3d(2, 3, 3, padding=1, bias=True)
    bn = randomize_bn(nn.Sequential(nn.BatchNorm3d(3)))[0]
    x = torch.randn(1, 2, 4, 5, 6)
    y = conv(x).detach()
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected = (y - bn.running_mean.view(1, -1, 1, 1, 1)) * s.view(1, -1, 1, 1, 1) + bn.bias.view(1, -1, 1, 1, 1)
    fold_conv_bn(conv, bn)
    _close(conv(x).detach(), expected.detach())


def test_bn_without_running_stats_or_after_non_conv_is_left_alone():
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                        nn.Linear(6, 6), nn.BatchNorm2d(4))
    assert find_conv_bn_pairs(seq) == []
    fused = fuse_bn(seq)
    assert count_bn(fused) == 2
    with pytest.raises(ValueError, match="cannot fold"):
        fold_conv_bn(seq[0], seq[1])


def test_sequential_pairs_and_inplace():
    seq = randomize_bn(nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)))
    ref = copy.deepcopy(seq)
    assert find_conv_bn_pairs(seq) == [("", "0", "1"), ("", "3", "4")]
    x = torch.randn(2, 1, 8, 8)
    out = fuse_bn(seq, inplace=True)
    assert out is seq
    assert count_bn(seq) == 0
    assert seq[0].bias is not None
    with torch.no_grad():
        _close(seq(x), ref(x))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_folded_weights_are_the_batch_norm_arithmetic_written_out(affine, bias):
    conv = nn.Conv2d(3, 4, 3, bias=bias).double()
    bn = randomize_bn(nn.Sequential(nn.BatchNorm2d(4, affine=affine))).double()[0]
    w, b = conv.weight.detach().clone(), conv.bias.detach().clone() if bias else torch.zeros(4, dtype=torch.float64)
    gamma = bn.weight.detach() if affine else torch.ones(4, dtype=torch.float64)
    beta = bn.bias.detach() if affine else torch.zeros(4, dtype=torch.float64)
    s = gamma / torch.sqrt(bn.running_var + bn.eps)
    fold_conv_bn(conv, bn)
    torch.testing.assert_close(conv.weight.detach(), w * s.view(-1, 1, 1, 1), rtol=1e-14, atol=0)
    torch.testing.assert_close(conv.bias.detach(), (b - bn.running_mean) * s + beta, rtol=1e-14, atol=1e-15)
    assert conv.bias.requires_grad == conv.weight.requires_grad


def test_fused_dual_convolutions_stay_dual_and_take_images():
    enc = fuse_bn(randomize_bn(create_encoder("resnet10", widths=TINY_WIDTHS)))
    assert type(enc.conv1).__name__ == "DualConv3d"
    assert enc.conv1.bias is not None
    with torch.no_grad():
        assert enc(torch.randn(1, 1, 32, 32))[-1].shape == (1, 64, 1, 1)
