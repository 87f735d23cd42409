"""medzoo ResNets as MONAI FlexibleUNet backbones (``BaseEncoder``), on 2D images and 3D volumes."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from safetensors.torch import save_file
from torch import nn

from medzoo.encoders import RESNET_SPECS, create_encoder
from medzoo.zoo.flexible_unet import FlexUNetResNet, register_flexible_unet_backbone, register_flexible_unet_backbones
from tests.helpers import TINY_WIDTHS

DECODER = (16, 16, 8, 8, 4)


@pytest.fixture(scope="module")
def tiny18() -> str:
    return register_flexible_unet_backbone("medzoo-test-resnet18", "resnet18", widths=TINY_WIDTHS)


def test_default_family_is_registered_with_monais_channels():
    """The default family declares what MONAI declares for its own ResNet backbones of the same depths."""
    names = register_flexible_unet_backbones()
    assert names == [f"medzoo-resnet{d}" for d in RESNET_SPECS]
    assert issubclass(FlexUNetResNet, BaseEncoder)
    for depth in RESNET_SPECS:
        ours, monais = (FLEXUNET_BACKBONE.register_dict[n] for n in (f"medzoo-resnet{depth}", f"resnet{depth}"))
        assert ours["type"] is FlexUNetResNet
        assert ours["feature_number"] == monais["feature_number"] == 5
        assert tuple(ours["feature_channel"]) == tuple(monais["feature_channel"])
    entry = FLEXUNET_BACKBONE.register_dict["medzoo-resnet10"]
    enc = entry["type"](**entry["parameter"]).eval()  # the declared channels are the ones the encoder returns
    assert [m.shape[1] for m in enc(torch.zeros(1, 1, 32, 32, 32))] == list(entry["feature_channel"])


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 64, 96)), (3, (2, 1, 32, 32, 32))])
def test_flexible_unet_builds_and_trains_one_step(tiny18, spatial_dims, shape):
    torch.manual_seed(0)
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone=tiny18, spatial_dims=spatial_dims,
                       decoder_channels=DECODER)
    assert isinstance(net.encoder, FlexUNetResNet)
    x = torch.randn(*shape)
    y = (x > 0.5).long()[:, 0]
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    grad = net.encoder.conv1.weight.grad
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        after = nn.functional.cross_entropy(net(x), y)
    assert after < loss.detach()
    assert net(x).shape == (shape[0], 2, *shape[2:])


def test_encoder_maps_halve_per_stage(tiny18):
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone=tiny18, spatial_dims=2, decoder_channels=DECODER)
    maps = net.encoder(torch.zeros(1, 1, 64, 96))
    assert [tuple(m.shape[2:]) for m in maps] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
    assert [m.shape[1] for m in maps] == list(FLEXUNET_BACKBONE.register_dict[tiny18]["feature_channel"])


def test_named_default_backbone_builds_in_2d():
    register_flexible_unet_backbones()
    net = FlexibleUNet(in_channels=1, out_channels=3, backbone="medzoo-resnet18", spatial_dims=2)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)


def test_pretrained_reference_loads_the_weights(tiny18, tmp_path):
    src = create_encoder("resnet18", widths=TINY_WIDTHS)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone=tiny18, spatial_dims=2, pretrained=str(path),
                       decoder_channels=DECODER)
    for key, value in src.state_dict().items():
        assert torch.equal(net.encoder.state_dict()[key], value), key
    with pytest.raises(ValueError, match="name the weights"):
        FlexibleUNet(in_channels=1, out_channels=2, backbone=tiny18, spatial_dims=2, pretrained=True,
                     decoder_channels=DECODER)


def test_variant_options_reach_the_encoder():
    name = register_flexible_unet_backbone("medzoo-test-resnet10-gn", "resnet10", widths=TINY_WIDTHS,
                                           norm=("group", {"num_groups": 4}))
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone=name, spatial_dims=3, decoder_channels=DECODER)
    norms = {type(m) for m in net.encoder.modules() if isinstance(m, (nn.GroupNorm, nn.modules.batchnorm._NormBase))}
    assert norms == {nn.GroupNorm}


def test_wrong_input_rank_and_bad_registrations(tiny18):
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone=tiny18, spatial_dims=2, decoder_channels=DECODER)
    with pytest.raises(ValueError, match="spatial_dims=2"):
        net.encoder(torch.zeros(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="MONAI's own"):
        register_flexible_unet_backbone("resnet18", "resnet18")
    with pytest.raises(ValueError, match="already registered"):
        register_flexible_unet_backbone(tiny18, "resnet18", widths=(16, 16, 32, 64))
    with pytest.raises(ValueError, match="encoder must be one of"):
        register_flexible_unet_backbone("medzoo-test-bad", "resnet11")
    with pytest.raises(ValueError, match="widths"):
        register_flexible_unet_backbone("medzoo-test-bad", "resnet18", widths=(8, 16))
    assert "medzoo-test-bad" not in FLEXUNET_BACKBONE.register_dict
    assert register_flexible_unet_backbone(tiny18, "resnet18", widths=TINY_WIDTHS) == tiny18  # same options: fine
