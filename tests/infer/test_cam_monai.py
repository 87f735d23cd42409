"""Image Grad-CAM equals ``monai.visualize.GradCAM`` hooked on the encoder's last layer (hooks fire on images)."""

from __future__ import annotations

import torch
from monai.visualize import GradCAM
from torch import nn

from medzoo.infer.cam import grad_cam


class _TaskLogits(nn.Module):
    """One task's logits tensor, the output MONAI's CAM classes expect."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.task]


def test_image_gradcam_equals_monai_gradcam_on_layer4(cxr):
    x = torch.randn(2, 1, 32, 32)
    ours = grad_cam(cxr, x, "findings", "b")
    layer = "model.encoder." + cxr.encoder.feature_info.module_name(-1)
    ref = GradCAM(_TaskLogits(cxr, "findings"), target_layers=layer, postprocessing=lambda t: t)(x, class_idx=1).detach()
    assert ours.maps.shape == (2, 32, 32)
    torch.testing.assert_close(ours.maps, ref[:, 0], rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
