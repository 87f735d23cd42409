"""MedicalNet checkpoints load exactly: features and seg logits equal an independent MedicalNet implementation."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import ResNet

from medzoo.encoders import create_encoder
from medzoo.zoo import UnsafeWeightsError, from_medicalnet, load_medicalnet, read_weights
from medzoo.zoo.medicalnet import detect_architecture
from tests.helpers import TINY_WIDTHS
from tests.zoo.medicalnet_reference import MedicalNetResNet, randomize, save_released, save_train_checkpoint

CASES = [(10, "B"), (18, "A"), (50, "B")]
# one per block type by default (basic with shortcut A, bottleneck with B); resnet10 (basic, B) is slow
PARAMS = [pytest.param(10, "B", marks=pytest.mark.slow), (18, "A"), (50, "B")]
X = torch.randn(2, 1, 16, 24, 32, generator=torch.Generator().manual_seed(5))


def reference(depth, shortcut, seg=None, seed=0):
    return randomize(MedicalNetResNet(depth, shortcut, TINY_WIDTHS, num_seg_classes=seg), seed).eval()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """depth -> (reference model, path of a released-format backbone file)."""
    out = {}
    for depth, shortcut in CASES:
        ref = reference(depth, shortcut)
        path = tmp_path_factory.mktemp("mn") / f"resnet_{depth}.pth"
        save_released(ref, path)
        out[depth] = (ref, path)
    return out


@pytest.mark.parametrize("depth,shortcut", PARAMS)
def test_released_backbone_gives_medicalnet_features(released, depth, shortcut):
    ref, path = released[depth]
    enc = create_encoder(f"resnet{depth}", output_stride=8, widths=TINY_WIDTHS).eval()
    report = load_medicalnet(enc, path)
    assert report.ok
    assert not report.adapted
    assert not report.ignored
    assert sorted(report.loaded) == sorted(enc.state_dict())
    with torch.no_grad():
        ours, (theirs, _) = enc(X), ref(X)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("depth,shortcut", PARAMS)
def test_train_checkpoint_with_seg_head_gives_medicalnet_logits(tmp_path, depth, shortcut):
    ref = reference(depth, shortcut, seg=3, seed=1)
    path = tmp_path / "epoch_3.pth.tar"
    save_train_checkpoint(ref, path)
    model = from_medicalnet(path).eval()
    assert model.encoder.architecture()["shortcut"] == shortcut
    assert model.encoder.output_stride == 8
    report = model.load_report
    assert report.ok
    assert any(k.startswith("heads.seg.") for k in report.loaded)
    assert all(k.startswith(("encoder.", "heads.seg.")) for k in report.loaded)
    with torch.no_grad():
        logits, (_, expected) = model(X)["seg"], ref(X)
    assert logits.shape == (2, 3, 4, 6, 8)  # MedicalNet's own resolution: input / 4
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def _monai_the_monai_way(path, depth, shortcut):
    """MONAI's ResNet loaded as MONAI loads MedicalNet weights: strip 'module.', strict load."""
    block, layers = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 50: ("bottleneck", [3, 4, 6, 3])}[depth]
    net = ResNet(block, layers, list(TINY_WIDTHS), n_input_channels=1, conv1_t_stride=2, shortcut_type=shortcut,
                 bias_downsample=False, feed_forward=False)
    sd = torch.load(path, weights_only=True)["state_dict"]
    net.load_state_dict({k.replace("module.", ""): v for k, v in sd.items()}, strict=True)
    return net.eval()


def _monai_dilate(net):
    """The documented MONAI -> MedicalNet change: layer3/4 stride 1, 3x3x3 convs dilated 2/4 with padding = dilation."""
    for layer, d in ((net.layer3, 2), (net.layer4, 4)):
        for block in layer:
            for conv in (m for m in block.modules() if isinstance(m, torch.nn.Conv3d)):
                conv.stride = (1, 1, 1)
                if conv.kernel_size == (3, 3, 3):
                    conv.dilation = conv.padding = (d, d, d)
            if block.downsample is not None and not isinstance(block.downsample, torch.nn.Module):
                block.downsample.keywords["stride"] = 1
    return net


def _monai_features(net, x):
    stem = net.act(net.bn1(net.conv1(x)))
    x1 = net.layer1(net.maxpool(stem))
    x2 = net.layer2(x1)
    x3 = net.layer3(x2)
    return [stem, x1, x2, x3, net.layer4(x3)]


@pytest.mark.parametrize("output_stride", [32, 8])
@pytest.mark.parametrize("depth,shortcut", PARAMS)
def test_features_equal_monai_loaded_the_monai_way(released, depth, shortcut, output_stride):
    _, path = released[depth]
    net = _monai_the_monai_way(path, depth, shortcut)
    if output_stride == 8:
        net = _monai_dilate(net)
    enc = create_encoder(f"resnet{depth}", output_stride=output_stride, widths=TINY_WIDTHS).eval()
    report = load_medicalnet(enc, path)
    assert ("<geometry>" in report.adapted) == (output_stride != 8)
    with torch.no_grad():
        for a, b in zip(enc(X), _monai_features(net, X)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_architecture_mismatch_names_both(released):
    _, path = released[18]
    enc = create_encoder("resnet10", output_stride=8, widths=TINY_WIDTHS)
    with pytest.raises(ValueError) as err:
        load_medicalnet(enc, path)
    msg = str(err.value)
    assert "resnet18" in msg
    assert "shortcut A" in msg
    assert "resnet10" in msg
    assert "shortcut B" in msg
    assert str(path) in msg
    with pytest.raises(ValueError, match=r"widths \[8, 16, 32, 64\].*widths \[64, 128, 256, 512\]"):
        load_medicalnet(create_encoder("resnet18", output_stride=8), path)


def test_detects_architecture_from_keys(released, tmp_path):
    for depth, shortcut in CASES:
        sd = {k.removeprefix("module."): v for k, v in torch.load(released[depth][1])["state_dict"].items()}
        arch = detect_architecture(sd)
        assert (arch["depth"], arch["shortcut"], arch["widths"]) == (depth, shortcut, list(TINY_WIDTHS))
        assert arch["num_seg_classes"] is None
        assert arch["in_channels"] == 1
    with pytest.raises(ValueError, match="no 'conv1.weight'"):
        detect_architecture({"fc.weight": torch.zeros(1)}, "x.pth")


def test_in_channels_adapted_and_reported(released):
    _, path = released[10]
    enc1 = create_encoder("resnet10", output_stride=8, widths=TINY_WIDTHS).eval()
    enc3 = create_encoder("resnet10", output_stride=8, widths=TINY_WIDTHS, in_channels=3).eval()
    load_medicalnet(enc1, path)
    report = load_medicalnet(enc3, path)
    assert report.adapted == {"conv1.weight": "input channels 1 -> 3"}
    with torch.no_grad():
        torch.testing.assert_close(enc3(X.repeat(1, 3, 1, 1, 1))[-1], enc1(X)[-1], atol=1e-5, rtol=1e-4)


def test_missing_num_batches_tracked_is_tolerated_and_reported(released, tmp_path):
    ref, _ = released[10]
    sd = {f"module.{k}": v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": sd}, tmp_path / "old.pth")
    report = load_medicalnet(create_encoder("resnet10", output_stride=8, widths=TINY_WIDTHS), tmp_path / "old.pth")
    assert report.missing
    assert all(k.endswith("num_batches_tracked") for k in report.missing)


def test_seg_head_ignored_by_a_bare_encoder_and_refused_off_stride_8(tmp_path):
    ref = reference(10, "B", seg=2)
    save_train_checkpoint(ref, tmp_path / "ckpt.pth")
    report = load_medicalnet(create_encoder("resnet10", output_stride=8, widths=TINY_WIDTHS), tmp_path / "ckpt.pth")
    assert set(report.ignored) == {k for k in ref.state_dict() if k.startswith("conv_seg.")}
    with pytest.raises(ValueError, match="only exists at output_stride 8"):
        from_medicalnet(tmp_path / "ckpt.pth", output_stride=16)


class _Payload:
    """Unpickling this runs code that writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_pickle_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(8, 1, 7, 7, 7)}, "x": _Payload(marker)}, path)
    with pytest.raises(UnsafeWeightsError, match="refused to load"):
        read_weights(path)
    with pytest.raises(UnsafeWeightsError):
        load_medicalnet(create_encoder("resnet10", output_stride=8, widths=TINY_WIDTHS), path)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_truncated_file_gives_a_clear_error(released, tmp_path):
    data = released[10][1].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pth: not a readable torch weight file"):
        read_weights(tmp_path / "cut.pth")


def test_convert_cli_writes_safetensors_and_metadata(released, tmp_path):
    from safetensors.torch import load_file

    from medzoo.cli.main import main

    ref, path = released[18]
    assert main(["convert", "medicalnet", str(path), "--out", str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["architecture"]["encoder"] == "resnet18"
    assert meta["architecture"]["shortcut"] == "A"
    assert meta["architecture"]["output_stride"] == 8
    assert meta["parts"] == ["encoder"]
    state = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "conv1.weight" in state
    assert not any(k.startswith(("module.", "encoder.")) for k in state)
    enc = create_encoder("resnet18", output_stride=8, widths=TINY_WIDTHS).eval()
    enc.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(enc(X)[-1], ref(X)[0][-1], atol=1e-5, rtol=1e-5)
    assert main(["convert", "medicalnet", str(path), "--out", str(tmp_path / "out")]) == 2  # exists, no --force

