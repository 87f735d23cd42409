"""The 2D DenseNet-121 baseline meets the encoder contract (shapes, channels, reductions, gradients, errors)."""

from __future__ import annotations

import pytest
import torch

from medzoo.encoders import ENCODERS, DenseNetEncoder, create_encoder, list_encoders
from medzoo.encoders.base import Encoder
from medzoo.encoders.densenet import densenet_channels

TINY = {"init_features": 8, "growth_rate": 4, "block_config": (2, 1, 2, 1)}


def tiny(in_channels: int = 1) -> DenseNetEncoder:
    torch.manual_seed(0)
    return create_encoder("densenet121", in_channels=in_channels, **TINY)


def test_registered_and_protocol():
    assert "densenet121" in list_encoders()
    assert "densenet121" in ENCODERS
    enc = tiny()
    assert isinstance(enc, Encoder)
    assert isinstance(enc, DenseNetEncoder)
    assert enc.spatial_dims == 2
    assert enc.output_stride == 32
    assert enc.feature_dim == enc.out_channels[-1]
    arch = enc.architecture()
    assert arch["encoder"] == "densenet121"
    assert arch["block_config"] == [2, 1, 2, 1]
    assert arch["output_stride"] == 32


def test_channels_formula_matches_monai_default():
    # DenseNet-121: 64 stem, blocks of 6/12/24/16 layers growing by 32, transitions halving the channels
    assert densenet_channels(64, 32, (6, 12, 24, 16)) == (64, 64 + 6 * 32, 128 + 12 * 32, 256 + 24 * 32,
                                                          512 + 16 * 32)
    # the tiny one, counted by hand: 8; 8+2*4=16; 8+1*4=12; 6+2*4=14; 7+1*4=11
    assert tiny().out_channels == (8, 16, 12, 14, 11)


@pytest.mark.parametrize("size", [(64, 64), (32, 96)])
def test_five_maps_match_declared_channels_and_reductions(size):
    enc = tiny().eval()
    maps = enc(torch.randn(2, 1, *size))
    assert len(maps) == 5
    for m, c, red in zip(maps, enc.out_channels, enc.reductions):
        assert m.shape == (2, c, size[0] // red[-2], size[1] // red[-1])
    assert [r[-1] for r in enc.reductions] == [2, 4, 8, 16, 32]


def test_block4_is_the_normed_activated_monai_feature_map():
    """block4 equals relu(MONAI's own features(x)), the map CheXNet pools."""
    enc = tiny().eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc(x)[-1], torch.relu(enc.features(x)), atol=1e-6)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_in_channels_and_gradients(in_channels):
    enc = tiny(in_channels).train()
    x = torch.randn(2, in_channels, 32, 32, requires_grad=True)
    sum(m.mean() for m in enc(x)).backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0
    assert enc.features.conv0.weight.shape[1] == in_channels
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
    assert enc.features.conv0.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="input channel"):
        enc(torch.zeros(1, in_channels + 1, 32, 32))


def test_volume_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"2D only.*\[B, C, H, W\].*\(1, 1, 8, 32, 32\)"):
        tiny()(torch.zeros(1, 1, 8, 32, 32))


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride must be 32"):
        create_encoder("densenet121", output_stride=16, **TINY)
    with pytest.raises(ValueError, match="widths.*ResNets only"):
        create_encoder("densenet121", widths=(8, 16, 32, 64))
    with pytest.raises(ValueError, match="block_config must be four"):
        create_encoder("densenet121", init_features=8, growth_rate=4, block_config=(1, 1, 1))


def test_state_dict_keys_are_monais_without_classifier():
    keys = set(tiny().state_dict())
    assert "features.conv0.weight" in keys
    assert "features.norm5.weight" in keys
    assert "features.denseblock1.denselayer1.layers.conv1.weight" in keys
    assert not any(k.startswith("class_layers") for k in keys)


def test_in_a_multitask_model_on_images():
    from medzoo.models import create_model

    model = create_model({"encoder": {"name": "densenet121", "options": TINY},
                          "tasks": {"tb": {"type": "classification", "level": "image", "labels": ["normal", "tb"]},
                                    "lung": {"type": "segmentation", "level": "image",
                                             "labels": ["background", "lung"], "decoder_channels": [8, 8, 8, 8, 8]}}})
    out = model(torch.randn(2, 1, 64, 64))
    assert out["tb"].shape == (2, 2)
    assert out["lung"].shape == (2, 2, 64, 64)
