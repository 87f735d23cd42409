"""``norm`` and ``act`` reach every layer of the ResNet encoder, on the 3D and the 2D path (issue: MONAI 1.6's ResNet
passes them to the stem only); batch norm stays MONAI's and MedicalNet's network exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import ResNet, ResNetFeatures
from torch import nn
from torch.nn import functional as F

from medzoo.encoders import RESNET_SPECS, create_encoder
from tests.helpers import TINY_WIDTHS, randomize_bn

ROOT = Path(__file__).resolve().parents[2]
DEPTHS = ("resnet10", "resnet18", "resnet50")  # basic + shortcut B, basic + shortcut A, bottleneck + shortcut B
GROUP = ("group", {"num_groups": 8})
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm)


def norms(enc: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in enc.named_modules() if isinstance(m, NORM_TYPES)}


def build(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return create_encoder(name, widths=TINY_WIDTHS, **kw)


@pytest.mark.parametrize("name", DEPTHS)
def test_group_norm_replaces_every_batch_norm(name):
    reference, enc = norms(build(name)), norms(build(name, norm=GROUP))
    assert set(enc) == set(reference)  # the same layers, shortcut norms included
    leftover = [n for n, m in enc.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert leftover == []
    for n, m in enc.items():
        assert type(m) is nn.GroupNorm, n
        assert m.num_groups == 8, n
        assert m.num_channels == reference[n].num_features, n


@pytest.mark.parametrize("norm", ["instance", ("instance", {"affine": True})])
@pytest.mark.parametrize("name", DEPTHS)
def test_instance_norm_replaces_every_batch_norm(name, norm):
    reference, enc = norms(build(name)), norms(build(name, norm=norm))
    assert set(enc) == set(reference)
    for n, m in enc.items():
        assert isinstance(m, nn.InstanceNorm3d), n
        assert not isinstance(m, nn.modules.batchnorm._BatchNorm), n
        assert m.affine == (norm != "instance"), n


@pytest.mark.parametrize("name, norm", [("resnet10", GROUP), ("resnet18", "instance"), ("resnet50", GROUP),
                                        ("resnet50", "instance")])
def test_2d_path_equals_3d_with_norm(name, norm):
    """Per-item norms too: the image path equals the volume path on depth-1 input, in train and eval mode."""
    enc = build(name, norm=norm)
    for p in enc.parameters():  # non-trivial affine parameters
        p.data.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 1, 64, 48)  # instance norm needs more than one value per map at stride 32
    for mode in (True, False):
        enc.train(mode)
        with torch.no_grad():
            f2, f3 = enc(x), enc(x.unsqueeze(2))
        for a, b in zip(f2, f3):
            torch.testing.assert_close(a, b.squeeze(2), atol=1e-4, rtol=1e-4)


def test_block_computes_group_norm():
    """The first residual block of a group-norm resnet10, written out with torch.nn.functional."""
    enc = build("resnet10", norm=GROUP).eval()
    block, x = enc.layer2[0], torch.randn(2, 8, 6, 10, 12)
    with torch.no_grad():
        out = block(x)
        h = F.relu(F.group_norm(F.conv3d(x, block.conv1.weight, stride=2, padding=1), 8,
                                block.bn1.weight, block.bn1.bias))
        h = F.group_norm(F.conv3d(h, block.conv2.weight, padding=1), 8, block.bn2.weight, block.bn2.bias)
        ds = block.downsample
        short = F.group_norm(F.conv3d(x, ds[0].weight, stride=2), 8, ds[1].weight, ds[1].bias)
        expected = F.relu(h + short)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", DEPTHS)
def test_act_reaches_every_block(name):
    enc = build(name, act=("leakyrelu", {"negative_slope": 0.1}))
    acts = {n: m for n, m in enc.named_modules() if n == "act" or n.endswith(".act")}
    assert len(acts) == 1 + sum(len(getattr(enc, f"layer{i}")) for i in range(1, 5))
    for n, m in acts.items():
        assert isinstance(m, nn.LeakyReLU), n
        assert m.negative_slope == 0.1, n


@pytest.mark.parametrize("name", DEPTHS)
def test_batch_norm_is_monais_network_exactly(name):
    """Default batch norm: MONAI's own ResNet with MedicalNet's layout, read out by MONAI's ``ResNetFeatures``
    forward, gives identical maps on the same state dict (so MedicalNet checkpoints still compute exactly)."""
    enc = randomize_bn(build(name))
    block, layers, shortcut, _ = RESNET_SPECS[enc.depth]
    ref = ResNet(block, list(layers), list(TINY_WIDTHS), n_input_channels=1, conv1_t_stride=2, shortcut_type=shortcut,
                 bias_downsample=False, feed_forward=False)
    ref.load_state_dict(enc.state_dict(), strict=True)
    ref.eval()
    x = torch.randn(2, 1, 16, 32, 24)
    with torch.no_grad():
        for a, b in zip(enc(x), ResNetFeatures.forward(ref, x), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("norm, match", [
    ("layer", "norm must be one of"),
    ("group", "num_groups"),
    (("group", {"num_groups": 3}), "divides every stage width"),
])
def test_bad_norm_is_a_clear_error(norm, match):
    with pytest.raises(ValueError, match=match):
        build("resnet10", norm=norm)


def _group_norm_models() -> list[tuple[str, dict]]:
    """Every model config in configs/ (top level or under ``run:``) whose encoder asks for group norm."""
    from medzoo.config import compose

    found = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        data = compose(path)
        model = data.get("model") or (data.get("run") or {}).get("model")
        norm = (model or {}).get("encoder", {}).get("options", {}).get("norm")
        if isinstance(norm, list) and norm and norm[0] == "group":
            found.append((path.name, model))
    return found


def test_experiment_configs_that_say_group_norm_get_it():
    from medzoo import create_model

    models = _group_norm_models()
    assert {name for name, _ in models} >= {"pretrain_multitask.yaml", "lung_seg.yaml", "finetune_tb.yaml"}
    for name, model in models:
        found = {type(m) for m in create_model(model).encoder.modules() if isinstance(m, NORM_TYPES)}
        assert found == {nn.GroupNorm}, name

