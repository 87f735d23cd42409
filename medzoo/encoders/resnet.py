"""3D ResNet encoders on ``monai.networks.nets.ResNet``, with MedicalNet's geometry and a 2D fast path.

The network is MONAI's ResNet (parameter names unchanged, so MedicalNet checkpoints load by name) with a stride-2
stem, and MedicalNet's shortcut type and downsample bias per depth. ``output_stride`` 16 and 8 trade the stride of
layer4 (and layer3) for dilation, the DeepLab way; 8 is exactly MedicalNet's layout (layer3 dilation 2, layer4
dilation 4, on every 3x3x3 convolution of those layers, with ``padding = dilation``).

The 2D path runs a ``spatial_dims=2`` twin of the same network, built once on the meta device, through
``torch.func.functional_call`` with the centre depth slice of every 3D kernel and the same norm buffers. On an
input of depth 1 the outer depth taps of every kernel only ever meet zero padding, so this is what the 3D network
computes on ``x.unsqueeze(2)``, with 2D convolutions; gradients reach the centre taps of the 3D weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets.resnet import ResNet
from torch.nn.utils.stateless import _reparametrize_module

from medzoo.encoders.base import check_encoder_input

__all__ = ["ResNetEncoder", "RESNET_SPECS", "DEFAULT_WIDTHS", "dilations_for"]

DEFAULT_WIDTHS = (64, 128, 256, 512)

# depth -> (block, blocks per stage, MedicalNet shortcut type, downsample conv bias)
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int], str, bool]] = {
    10: ("basic", (1, 1, 1, 1), "B", False),
    18: ("basic", (2, 2, 2, 2), "A", False),
    34: ("basic", (3, 4, 6, 3), "A", False),
    50: ("bottleneck", (3, 4, 6, 3), "B", False),
    101: ("bottleneck", (3, 4, 23, 3), "B", False),
    152: ("bottleneck", (3, 8, 36, 3), "B", False),
    200: ("bottleneck", (3, 24, 36, 3), "B", False),
}


def dilations_for(output_stride: int) -> tuple[int, int]:
    """Dilation of (layer3, layer4) for an output stride: 32 -> (1, 1), 16 -> (1, 2), 8 -> (2, 4)."""
    table = {32: (1, 1), 16: (1, 2), 8: (2, 4)}
    if output_stride not in table:
        raise ValueError(f"output_stride must be one of 32, 16 or 8, got {output_stride!r}")
    return table[output_stride]


class _Trunk(ResNet):
    """MONAI's ResNet without the classifier, whose forward returns the five stage maps."""

    def __init__(self, block: str, layers: tuple[int, ...], widths: tuple[int, ...], spatial_dims: int,
                 in_channels: int, shortcut: str, bias_downsample: bool, output_stride: int, **kwargs: Any) -> None:
        super().__init__(
            block, list(layers), list(widths), spatial_dims=spatial_dims, n_input_channels=in_channels,
            conv1_t_size=7, conv1_t_stride=2, shortcut_type=shortcut, bias_downsample=bias_downsample,
            feed_forward=False, **kwargs,
        )
        del self.avgpool  # pooling belongs to the heads
        for layer, dilation in zip((self.layer3, self.layer4), dilations_for(output_stride)):
            if dilation > 1:
                _dilate(layer, dilation, spatial_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        stem = self.act(self.bn1(self.conv1(x)))
        x1 = self.layer1(stem if self.no_max_pool else self.maxpool(stem))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        return [stem, x1, x2, x3, self.layer4(x3)]


def _dilate(layer: nn.Sequential, dilation: int, spatial_dims: int) -> None:
    """Give every block of ``layer`` stride 1 and dilate its 3x3 convolutions (padding = dilation), as MedicalNet."""
    ones = (1,) * spatial_dims
    for block in layer:
        for conv in (m for m in block.modules() if isinstance(m, nn.modules.conv._ConvNd)):
            conv.stride = ones
            if conv.kernel_size[0] > 1:
                conv.dilation = conv.padding = (dilation,) * spatial_dims
        block.stride = 1
        ds = block.downsample
        if isinstance(ds, partial):  # shortcut 'A': parameter-free avg-pool + zero channels
            block.downsample = partial(ds.func, *ds.args, **{**ds.keywords, "stride": 1})


class ResNetEncoder(_Trunk):
    """A MONAI 3D ResNet encoder with MedicalNet's geometry options and a 2D fast path.

    Use :func:`medzoo.create_encoder` to build one by name.

    Args:
        depth: 10, 18, 34, 50, 101, 152 or 200.
        in_channels: input channels.
        output_stride: 32, 16 or 8 (8 = MedicalNet: layer3/4 dilated 2/4 instead of strided).
        widths: the four stage widths (default 64, 128, 256, 512); small widths make tiny test models.
        shortcut: "A" or "B" (default: MedicalNet's per depth; B for 10/50/101/152/200, A for 18/34).
        bias_downsample: bias on the B-shortcut convolution (MedicalNet has none).
        name: the registered name, for messages and metadata.
        **kwargs: passed to ``monai.networks.nets.ResNet`` (for example ``norm``, ``act``).

    Shapes:
        ``x [B, C, D, H, W]`` -> five maps ``[B, out_channels[i], D/r, H/r, W/r]`` with ``r = reductions[i]``;
        ``x [B, C, H, W]`` -> five 2D maps ``[B, out_channels[i], H/r, W/r]``.

    Example:
        >>> enc = ResNetEncoder(18, widths=(8, 16, 32, 64), output_stride=8)
        >>> [tuple(f.shape) for f in enc(torch.zeros(1, 1, 16, 32, 32))][-1]
        (1, 64, 2, 4, 4)
        >>> [tuple(f.shape) for f in enc(torch.zeros(1, 1, 32, 32))][-1]
        (1, 64, 4, 4)
    """

    spatial_dims = 3

    def __init__(self, depth: int, *, in_channels: int = 1, output_stride: int = 32,
                 widths: tuple[int, ...] | None = None, shortcut: str | None = None,
                 bias_downsample: bool | None = None, name: str | None = None, **kwargs: Any) -> None:
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}")
        block, layers, default_shortcut, default_bias = RESNET_SPECS[depth]
        widths = tuple(int(w) for w in (widths or DEFAULT_WIDTHS))
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be four positive ints, got {widths!r}")
        shortcut = (shortcut or default_shortcut).upper()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        bias = default_bias if bias_downsample is None else bool(bias_downsample)
        args = (block, layers, widths)
        opts = dict(in_channels=in_channels, shortcut=shortcut, bias_downsample=bias, output_stride=output_stride)
        super().__init__(*args, spatial_dims=3, **opts, **kwargs)
        with torch.device("meta"):
            twin = _Trunk(*args, spatial_dims=2, **opts, **kwargs)
        object.__setattr__(self, "_twin2d", twin)  # not a submodule: it holds no state
        self.name, self.depth, self.block, self.layers = name or f"resnet{depth}", depth, block, layers
        self.widths, self.shortcut, self.bias_downsample, self.in_channels = widths, shortcut, bias, in_channels
        self.output_stride = output_stride
        expansion = 4 if block == "bottleneck" else 1
        self.out_channels = (widths[0],) + tuple(w * expansion for w in widths)
        self.feature_dim = self.out_channels[-1]
        strides = (2, 4, 8, min(16, output_stride), output_stride)
        self.reductions = tuple((s, s, s) for s in strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """Five feature maps ``[stem, layer1, layer2, layer3, layer4]`` (2D maps for a 4-D input)."""
        check_encoder_input(x, self.in_channels, self.name)
        if x.dim() == 4:
            return self._forward_2d(x)
        return super().forward(x)

    def _forward_2d(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.__dict__.get("_reusing_2d"):
            return self._twin2d(x)
        return torch.func.functional_call(self._twin2d, self._state_2d(), (x,), strict=True)

    def _state_2d(self) -> dict[str, torch.Tensor]:
        """The 2D twin's tensors: centre depth slices of the 3D kernels (views, so gradients reach the 3D weights),
        and the encoder's own norm buffers (so running statistics update in place)."""
        for mine, theirs in zip(self.modules(), self._twin2d.modules()):
            theirs.training = mine.training  # honour per-module train/eval (frozen norms)
        state = {k: p[:, :, p.shape[2] // 2] if p.dim() == 5 else p for k, p in self.named_parameters()}
        state.update(self.named_buffers())
        return state

    @contextlib.contextmanager
    def reuse_2d_weights(self) -> Iterator[None]:
        """Within the block, image inputs share one set of sliced 2D weights instead of slicing per call.

        Series encoding calls the encoder once per chunk of slices; this removes the per-call cost of slicing the
        kernels and swapping them into the 2D twin. Train/eval flags are read on entry. Do not use it around
        activation-checkpointed calls whose recompute runs after the block.

        Example:
            >>> enc = ResNetEncoder(10, widths=(8, 16, 32, 64))
            >>> with enc.reuse_2d_weights():
            ...     a, b = enc(torch.zeros(2, 1, 32, 32)), enc(torch.zeros(3, 1, 32, 32))
            >>> a[-1].shape[0], b[-1].shape[0]
            (2, 3)
        """
        if self.__dict__.get("_reusing_2d"):
            yield
            return
        with _reparametrize_module(self._twin2d, self._state_2d(), strict=True):
            self.__dict__["_reusing_2d"] = True
            try:
                yield
            finally:
                self.__dict__["_reusing_2d"] = False

    def architecture(self) -> dict[str, Any]:
        """The architecture contract written into weight metadata and checked when loading."""
        return {
            "encoder": self.name, "depth": self.depth, "block": self.block, "layers": list(self.layers),
            "widths": list(self.widths), "shortcut": self.shortcut, "bias_downsample": self.bias_downsample,
            "in_channels": self.in_channels, "output_stride": self.output_stride,
        }

    def extra_repr(self) -> str:
        return f"name={self.name}, output_stride={self.output_stride}, shortcut={self.shortcut}"
