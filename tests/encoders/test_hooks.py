"""The module tree users see is the one that runs on images: hooks fire on the 2D path, so hook-based tools such as
``monai.visualize.GradCAM`` work on chest X-rays, and a plain 2D copy exists for export."""

from __future__ import annotations

import pytest
import torch
from monai.visualize import GradCAM
from torch import nn

from medzoo import create_model
from medzoo.encoders import create_encoder
from medzoo.infer.cam import grad_cam
from tests.helpers import TINY_WIDTHS, randomize_bn

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_every_module_fires_on_images_as_on_volumes(name):
    enc = create_encoder(name, widths=TINY_WIDTHS, output_stride=16).eval()
    names = [n for n, _ in enc.named_modules()]
    fired: dict[int, set[str]] = {4: set(), 5: set()}
    handles = [m.register_forward_hook(lambda mod, inp, out, key=n: fired[inp[0].dim()].add(key))
               for n, m in enc.named_modules()]
    with torch.no_grad():
        enc(torch.randn(1, 1, 32, 32))
        enc(torch.randn(1, 1, 8, 32, 32))
    for h in handles:
        h.remove()
    assert fired[4] == set(names)
    assert fired[5] == set(names)


def test_backward_hooks_on_images_equal_volume_depth_one():
    """A full backward hook on layer3 receives the same gradient through the 2D path as through the 3D network on
    the depth-1 volume."""
    enc = randomize_bn(create_encoder("resnet18", widths=TINY_WIDTHS)).eval()
    x = torch.randn(2, 1, 48, 40)
    grads = []
    handle = enc.layer3.register_full_backward_hook(lambda _m, _gi, go: grads.append(go[0].detach()))
    for inp in (x, x.unsqueeze(2)):
        out = enc(inp)[-1]
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    handle.remove()
    assert grads[0].dim() == 4
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1].squeeze(2), atol=1e-6, rtol=1e-5)


class TaskLogits(nn.Module):
    """One task's logits ``[B, K]``: what ``monai.visualize`` expects a network to return."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, tasks=[self.task])[self.task]


@pytest.mark.parametrize("label", [0, 2])
def test_monai_gradcam_on_cxr_equals_medzoo_gradcam(label):
    torch.manual_seed(0)
    model = create_model({"encoder": {"name": "resnet18", "widths": list(TINY_WIDTHS)},
                          "tasks": {"findings": {"type": "multilabel", "level": "image", "labels": LABELS}}})
    randomize_bn(model)
    with torch.no_grad():  # mostly positive head weights: a Grad-CAM map that the ReLU does not zero out
        w = model.heads["findings"].fc.weight
        w[label] = w[label].abs() - 0.5 * w[label].abs().mean()
    x = torch.rand(2, 1, 96, 80)  # CXR-shaped: [B, 1, H, W]
    ours = grad_cam(model, x, "findings", label).maps
    cam = GradCAM(TaskLogits(model, "findings"), target_layers="model.encoder.layer4", postprocessing=lambda m: m)
    theirs = cam(x, class_idx=label)
    assert theirs.shape == (2, 1, 96, 80)
    assert ours.abs().max() > 0  # a non-trivial map, so equality means something
    scale = ours.abs().max().item()
    torch.testing.assert_close(theirs[:, 0], ours, atol=1e-6 * scale, rtol=1e-5)


@pytest.mark.parametrize("norm", ["batch", ("group", {"num_groups": 8}), "instance"])
def test_to_2d_is_plain_2d_and_equal(norm):
    enc = randomize_bn(create_encoder("resnet18", widths=TINY_WIDTHS, output_stride=8, norm=norm)).eval()
    flat = enc.to_2d()
    kinds = {type(m) for m in flat.modules()}
    assert not kinds & {nn.Conv3d, nn.BatchNorm3d, nn.InstanceNorm3d, nn.MaxPool3d}
    assert nn.Conv2d in kinds
    assert set(flat.state_dict()) == set(enc.state_dict())
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        for a, b in zip(flat(x), enc(x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert flat.training is False


def test_functional_call_reaches_the_image_path():
    """torch.func tools see the parameters that images use: swapping conv1's weight changes the 2D output."""
    enc = create_encoder("resnet10", widths=TINY_WIDTHS).eval()
    x = torch.randn(1, 1, 32, 32)
    zero = {"conv1.weight": torch.zeros_like(enc.conv1.weight)}
    with torch.no_grad():
        out = torch.func.functional_call(enc, zero, (x,), strict=False)
    assert torch.equal(out[0], torch.relu(enc.bn1(torch.zeros(1, 8, 16, 16))))
