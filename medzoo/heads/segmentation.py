"""U-Net-style segmentation decoder over the encoder's five maps, 2D or 3D, for any output stride."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from monai.networks.layers.factories import Act, Conv, Norm
from torch import Tensor, nn
from torch.nn import functional as F

from medzoo.heads.base import HEADS, FeatureInfo, Head, HeadArgumentError, _resolve_labels, dense_activate

__all__ = ["SegmentationHead"]


class _ConvBlock(nn.Sequential):
    """Two (conv 3 -> norm -> ReLU) layers."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int) -> None:
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        super().__init__(
            conv(in_ch, out_ch, kernel_size=3, padding=1, bias=False), norm(out_ch), Act[Act.RELU](inplace=True),
            conv(out_ch, out_ch, kernel_size=3, padding=1, bias=False), norm(out_ch), Act[Act.RELU](inplace=True),
        )


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of a feature map to ``size`` (a no-op when it already has that size)."""
    return x if tuple(x.shape[2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="nearest")


@HEADS.register("segmentation")
class SegmentationHead(Head):
    """A U-Net decoder: from the deepest map up, each stage resizes to the next shallower encoder map, concatenates
    it (the skip) and applies two conv blocks; a last stage resizes to the input size. Logits come out at the input
    size for every output stride (dilated stages with equal size are simply concatenated) and for odd sizes.

    Args:
        encoder_channels: channels of the five encoder maps ``[stem, layer1, layer2, layer3, layer4]``.
        num_classes: segmentation classes K (1 = binary with sigmoid in ``predict``); or give ``labels``.
        labels: class names.
        decoder_channels: five stage widths, deep to shallow (default: the skips' widths, then half the stem's).
        spatial_dims: 3 for volumes, 2 for images.

    Example:
        >>> import torch
        >>> head = SegmentationHead((8, 8, 16, 32, 64), num_classes=2, spatial_dims=2)
        >>> feats = [torch.zeros(1, c, 32 // r, 32 // r) for c, r in zip((8, 8, 16, 32, 64), (2, 4, 8, 16, 32))]
        >>> head(feats, (32, 32)).shape
        torch.Size([1, 2, 32, 32])
    """

    kind: ClassVar[str] = "dense"
    levels: ClassVar[tuple[str, ...]] = ("volume", "image")

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int | None = None,
        labels: Sequence[str] | None = None,
        decoder_channels: Sequence[int] | None = None,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        self.label_names = _resolve_labels(num_classes, labels, "segmentation head")
        enc = [int(c) for c in encoder_channels]
        if len(enc) != 5:
            raise HeadArgumentError("encoder_channels", f"segmentation head needs 5 encoder maps, got {len(enc)}")
        if spatial_dims not in (2, 3):
            raise HeadArgumentError("spatial_dims", f"spatial_dims must be 2 or 3, got {spatial_dims}")
        dec = list(decoder_channels) if decoder_channels is not None else [*enc[3::-1], max(enc[0] // 2, 8)]
        if len(dec) != 5 or any(int(c) < 1 for c in dec):
            raise HeadArgumentError("decoder_channels", f"decoder_channels must be 5 positive ints, got {dec}")
        self.spatial_dims = spatial_dims
        skips = [*enc[3::-1], 0]  # layer3, layer2, layer1, stem, then the input-size stage without a skip
        ins = [enc[4], *dec[:-1]]
        self.blocks = nn.ModuleList(_ConvBlock(spatial_dims, i + s, o) for i, s, o in zip(ins, skips, dec))
        self.classifier = Conv[Conv.CONV, spatial_dims](dec[-1], len(self.label_names), kernel_size=1)

    @classmethod
    def from_features(cls, info: FeatureInfo, **kwargs: Any) -> SegmentationHead:
        """Build on the encoder's five maps, in the task's spatial dims."""
        return cls(info.channels, spatial_dims=info.spatial_dims, **kwargs)

    def forward(self, feats: Sequence[Tensor], input_size: Sequence[int] | None = None) -> Tensor:
        """Logits ``[B, K, *input_size]`` from the five maps (``input_size`` defaults to twice the stem's size)."""
        if len(feats) != 5 or feats[0].dim() != self.spatial_dims + 2:
            shapes = [tuple(f.shape) for f in feats]
            raise ValueError(
                f"segmentation head ({self.spatial_dims}D) needs five {self.spatial_dims}D maps, got {shapes}"
            )
        size = tuple(input_size) if input_size is not None else tuple(2 * s for s in feats[0].shape[2:])
        x = feats[4]
        for block, skip in zip(self.blocks[:-1], feats[3::-1]):
            x = block(torch.cat([_resize(x, skip.shape[2:]), skip], dim=1))
        x = self.blocks[-1](_resize(x, size))
        return self.classifier(x)

    def activate(self, logits: Tensor, input_size: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Softmax/argmax (sigmoid/threshold for one class); see :func:`~medzoo.heads.base.dense_activate`."""
        return dense_activate(logits, input_size)
