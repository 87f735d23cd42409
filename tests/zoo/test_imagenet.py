"""ImageNet ResNets (torchvision layout) inflated into medzoo's 3D encoder, checked against a plain-torch 2D ResNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medzoo.utils.spec_checks import _Ctx
from medzoo.zoo.imagenet import (
    detect_resnet2d,
    from_imagenet,
    imagenet_encoder,
    imagenet_preprocessing,
    inflate_kernel,
    load_imagenet,
)
from medzoo.zoo.spec import Preprocessing, SpecError
from tests.zoo.resnet2d_reference import randomised

TINY = (8, 16, 32, 64)
FULL = (64, 128, 256, 512)


@pytest.fixture(scope="module")
def resnet18_ref():
    """A torchvision-layout ResNet-18 (tiny widths) with random weights and BN statistics, and its state dict."""
    ref = randomised(18, seed=3, widths=TINY)
    return ref, {k: v.clone() for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("widths", [TINY, pytest.param(FULL, marks=pytest.mark.slow)], ids=["tiny", "full"])
@pytest.mark.parametrize("in_channels", [3, 1])
def test_centre_inflation_2d_path_equals_the_2d_network(in_channels, widths):
    ref = randomised(18, seed=3, widths=widths)
    enc = imagenet_encoder(18, in_channels=in_channels, widths=widths).eval()
    report = load_imagenet(enc, ref.state_dict(), inflate="centre")
    x = torch.randn(2, in_channels, 64, 48)
    # a 1-channel input through the summed stem is the 3-channel network on the image replicated to RGB
    x_ref = x if in_channels == 3 else x.repeat(1, 3, 1, 1)
    with torch.no_grad():
        ours, theirs = enc(x), ref(x_ref)
    assert report.inflation == "centre"
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_report_lists_every_key_once(resnet18_ref):
    _, state = resnet18_ref
    enc = imagenet_encoder(18, in_channels=1, widths=TINY)
    report = load_imagenet(enc, state)
    convs = [k for k, v in state.items() if v.dim() == 4]
    assert sorted(report.adapted) == sorted(convs)
    assert report.adapted["conv1.weight"] == "input channels 3 -> 1; 2D kernel inflated to 3D (centre)"
    assert report.adapted["layer1.0.conv1.weight"] == "2D kernel inflated to 3D (centre)"
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]
    assert not report.missing
    assert not report.unexpected
    assert sorted(report.loaded + list(report.adapted)) == sorted(enc.state_dict())
    assert "2D kernels inflated to 3D (centre)" in report.summary()


def test_centre_kernel_is_the_middle_slice_and_zero_elsewhere():
    w = torch.randn(4, 2, 3, 3)
    w3 = inflate_kernel(w, 5, "centre")
    assert w3.shape == (4, 2, 5, 3, 3)
    assert torch.equal(w3[:, :, 2], w)
    assert torch.count_nonzero(w3[:, :, [0, 1, 3, 4]]) == 0


def test_mean_inflation_is_i3d_on_a_depth_constant_volume():
    """conv3d with a mean-inflated kernel on a volume repeated over depth equals conv2d at interior depths."""
    w, img = torch.randn(4, 2, 3, 3), torch.randn(1, 2, 9, 9)
    w3 = inflate_kernel(w, 3, "mean")
    torch.testing.assert_close(w3.sum(dim=2), w)
    vol = img.unsqueeze(2).repeat(1, 1, 6, 1, 1)
    out3 = F.conv3d(vol, w3, padding=1)
    out2 = F.conv2d(img, w, padding=1)
    for d in range(1, 5):  # depth 0 and 5 also see the zero padding
        torch.testing.assert_close(out3[:, :, d], out2, rtol=1e-5, atol=1e-5)


def test_mean_inflation_encoder_stem_matches_2d_stem(resnet18_ref):
    ref, state = resnet18_ref
    enc = imagenet_encoder(18, in_channels=3, widths=TINY).eval()
    report = load_imagenet(enc, state, inflate="mean")
    img = torch.randn(1, 3, 32, 32)
    vol = img.unsqueeze(2).repeat(1, 1, 16, 1, 1)
    with torch.no_grad():
        stem3 = enc(vol)[0]  # [1, 8, 8, 16, 16]; output depth i reads input depths 2i-3 .. 2i+3
        stem2 = ref(img)[0]
    assert report.inflation == "mean"
    for d in range(2, 7):
        torch.testing.assert_close(stem3[:, :, d], stem2, rtol=1e-4, atol=1e-4)


def test_bottleneck_tiny_resnet50_and_from_imagenet():
    ref = randomised(50, seed=5, widths=(8, 16, 32, 64), num_classes=7)
    model = from_imagenet(ref.state_dict(), in_channels=3).eval()
    assert model.load_report.inflation == "centre"
    assert model.load_report.ok
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x)[-1], ref(x)[-1], rtol=1e-5, atol=1e-5)
    arch = model.encoder.architecture()
    assert (arch["depth"], arch["shortcut"], arch["bias_downsample"], arch["widths"]) == (50, "B", False,
                                                                                         [8, 16, 32, 64])


def test_detect_reads_depth_widths_and_classes():
    state = randomised(34, seed=1, widths=(8, 16, 32, 64), num_classes=5).state_dict()
    arch = detect_resnet2d(state)
    assert (arch["depth"], arch["block"], arch["layers"], arch["in_channels"], arch["num_classes"]) == (
        34, "basic", [3, 4, 6, 3], 3, 5)


def test_wrong_encoder_is_an_error_naming_both(resnet18_ref):
    from medzoo.encoders import create_encoder

    _, state = resnet18_ref
    with pytest.raises(ValueError, match=r"architecture mismatch \(shortcut\).*shortcut B.*shortcut A"):
        load_imagenet(create_encoder("resnet18", in_channels=3, widths=TINY), state)
    with pytest.raises(ValueError, match="3D MedicalNet files"):
        load_imagenet(imagenet_encoder(18, widths=TINY),
                      {k: v.unsqueeze(2) if v.dim() == 4 else v for k, v in state.items()})
    with pytest.raises(ValueError, match="inflate must be one of"):
        load_imagenet(imagenet_encoder(18, widths=TINY), state, inflate="tile")


def test_file_round_trip_and_model_prefix(tmp_path, resnet18_ref):
    _, state = resnet18_ref
    path = tmp_path / "resnet18-00000000.pth"
    torch.save(state, path)
    model = from_imagenet(path, in_channels=1)
    assert model.load_report.source == str(path)
    assert "encoder.conv1.weight" in model.load_report.adapted


def test_preprocessing_contract_is_valid_and_states_the_grey_rule():
    three = Preprocessing.from_dict(imagenet_preprocessing(3), _Ctx("imagenet"))
    one = Preprocessing.from_dict(imagenet_preprocessing(1), _Ctx("imagenet"))
    assert three.mean == (0.485, 0.456, 0.406)
    assert three.std == (0.229, 0.224, 0.225)
    assert one.mean == (0.449,)
    assert one.std == (0.226,)
    assert "replicated" in three.notes
    assert "summed" in one.notes
    with pytest.raises(SpecError, match="needs mean and std"):
        Preprocessing.from_dict({**imagenet_preprocessing(3), "std": [0.2]}, _Ctx("x"))
