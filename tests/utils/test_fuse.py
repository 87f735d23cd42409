"""fuse_bn: outputs unchanged (eval mode) for volumes and the 2D path; the fold maths checked by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medzoo.encoders import create_encoder
from medzoo.heads import ClassificationHead
from medzoo.models import MultiTaskModel
from medzoo.utils import find_conv_bn_pairs, fold_conv_bn, fuse_bn
from tests.conftest import TINY_WIDTHS


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so a wrong fold cannot pass."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal within 1e-5 of the reference's scale (fp32 rounding through up to 50 folded layers)."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("name", ["resnet10", "resnet18", "resnet50"])
def test_fused_encoder_matches_volume_and_2d_path(name):
    enc = _randomize_bn(create_encoder(name, widths=TINY_WIDTHS))
    fused = fuse_bn(enc)
    assert _n_bn(fused) == 0 and _n_bn(enc) > 0, "original untouched, copy fully fused"
    vol, img = torch.randn(1, 1, 16, 32, 32), torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        for x in (vol, img):
            for a, b in zip(enc(x), fused(x)):
                _close(b, a)


def test_fused_2d_path_equals_fused_3d_on_depth_one():
    enc = fuse_bn(_randomize_bn(create_encoder("resnet18", widths=TINY_WIDTHS)))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        for a, b in zip(enc(x), enc(x.unsqueeze(2))):
            _close(a, b.squeeze(2))


def test_fuse_bn_output_stride_8_and_multitask_model():
    enc = _randomize_bn(create_encoder("resnet10", widths=TINY_WIDTHS, output_stride=8))
    model = MultiTaskModel(enc, {"cls": ClassificationHead(64, num_classes=3)}, levels={"cls": "image"}).eval()
    fused = fuse_bn(model)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        _close(fused(x)["cls"], model(x)["cls"])
    assert not fused.training and _n_bn(fused) == 0


def test_fold_conv_bn_by_hand():
    conv = nn.Conv3d(2, 3, 3, padding=1, bias=True)
    bn = _randomize_bn(nn.Sequential(nn.BatchNorm3d(3)))[0]
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
    assert _n_bn(fused) == 2
    with pytest.raises(ValueError, match="cannot fold"):
        fold_conv_bn(seq[0], seq[1])


def test_sequential_pairs_and_inplace():
    seq = _randomize_bn(nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)))
    ref = copy.deepcopy(seq)
    assert find_conv_bn_pairs(seq) == [("", "0", "1"), ("", "3", "4")]
    x = torch.randn(2, 1, 8, 8)
    out = fuse_bn(seq, inplace=True)
    assert out is seq and _n_bn(seq) == 0 and seq[0].bias is not None
    with torch.no_grad():
        _close(seq(x), ref(x))
