"""MedicalNet's segmentation head (``conv_seg``), laid out so its checkpoints load key for key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from monai.networks.layers.factories import Act, Conv, Norm
from torch import Tensor, nn

from medzoo.heads.base import HEADS, FeatureInfo, Head, _resolve_labels, dense_activate

__all__ = ["MedicalNetSegHead"]


@HEADS.register("medicalnet_seg")
class MedicalNetSegHead(Head, nn.Sequential):
    """MedicalNet's ``conv_seg``: a transposed conv (x2), a 3x3x3 conv block and a 1x1x1 classifier.

    The children are indexed exactly as MedicalNet's, so the state-dict keys are ``0.weight, 0.bias, 1.*,
    3.weight, 4.*, 6.weight``::

        0 ConvTranspose3d(in, 32, k=2, s=2, bias) 1 BatchNorm3d(32) 2 ReLU
        3 Conv3d(32, 32, k=3, p=1, no bias)       4 BatchNorm3d(32) 5 ReLU
        6 Conv3d(32, num_classes, k=1, no bias)

    It reads the last encoder map only and returns raw logits at MedicalNet's own resolution (input / 4 when the
    encoder has output stride 8); :meth:`activate` (called by ``predict``) resizes them to the input size.
    Building it on an encoder whose output stride is not 8 is an error: MedicalNet's ``conv_seg`` weights were
    trained on stride-8 maps only.

    Args:
        in_channels: channels of the last encoder map (512 for MedicalNet's resnet18, 2048 for resnet50).
        num_classes: number of segmentation classes (MedicalNet's ``num_seg_classes``).
        labels: optional class names (length ``num_classes``).

    Example:
        >>> import torch
        >>> head = MedicalNetSegHead(64, num_classes=2)
        >>> head([torch.zeros(1, 64, 2, 4, 4)]).shape
        torch.Size([1, 2, 4, 8, 8])
    """

    kind: ClassVar[str] = "dense"
    levels: ClassVar[tuple[str, ...]] = ("volume",)

    def __init__(self, in_channels: int, num_classes: int | None = None, labels: Sequence[str] | None = None) -> None:
        label_names = _resolve_labels(num_classes, labels, "medicalnet_seg head")
        conv, convt, norm = Conv[Conv.CONV, 3], Conv[Conv.CONVTRANS, 3], Norm[Norm.BATCH, 3]
        super().__init__(
            convt(in_channels, 32, kernel_size=2, stride=2, bias=True),
            norm(32),
            Act[Act.RELU](inplace=True),
            conv(32, 32, kernel_size=3, padding=1, bias=False),
            norm(32),
            Act[Act.RELU](inplace=True),
            conv(32, len(label_names), kernel_size=1, bias=False),
        )
        self.label_names = label_names
        self._init_weights()

    def _init_weights(self) -> None:
        # MedicalNet's initialisation: kaiming (fan_out) on the Conv3d layers, BN weight 1 / bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_features(cls, info: FeatureInfo, **kwargs: Any) -> MedicalNetSegHead:
        """Build on the last encoder map; refuses an encoder whose output stride is not 8."""
        if info.output_stride != 8:
            raise ValueError(
                f"medicalnet_seg needs an encoder with output_stride 8 (MedicalNet's geometry), got "
                f"output_stride={info.output_stride}; use the 'segmentation' head for other strides"
            )
        if info.spatial_dims != 3:
            raise ValueError("medicalnet_seg is a 3D head; it serves volume-level tasks only")
        return cls(info.channels[-1], **kwargs)

    def forward(self, feats: Sequence[Tensor], input_size: Sequence[int] | None = None) -> Tensor:
        """Logits ``[B, K, D/4, H/4, W/4]`` from ``feats[-1]`` (``[B, C, D/8, H/8, W/8]``); ``input_size`` unused."""
        return nn.Sequential.forward(self, feats[-1])

    def activate(self, logits: Tensor, input_size: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Resize the logits to ``input_size`` (trilinear), then softmax/argmax; see :func:`dense_activate`."""
        return dense_activate(logits, input_size)
