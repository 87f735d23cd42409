"""3D ResNet encoders on ``monai.networks.nets.ResNet``, with MedicalNet's geometry, any norm, and a 2D path.

The network is MONAI's ResNet (parameter names unchanged, so MedicalNet checkpoints load by name) with a stride-2
stem, and MedicalNet's shortcut type and downsample bias per depth. ``output_stride`` 16 and 8 trade the stride of
layer4 (and layer3) for dilation, the DeepLab way; 8 is exactly MedicalNet's layout (layer3 dilation 2, layer4
dilation 4, on every 3x3x3 convolution of those layers, with ``padding = dilation``).

``norm`` and ``act`` apply to every layer: the stem, every residual block and every B-shortcut. MONAI 1.6's
``ResNet`` passes them to the stem only, so the encoder builds MONAI's network and then puts the requested norm and
activation layers in place of the block ones.

Images ``[B, C, H, W]`` run through the same modules as volumes (see :mod:`medzoo.encoders.dual`): each 3D layer
runs its 2D counterpart with the centre depth slice of its kernel. On an input of depth 1 the outer depth taps of
every kernel only ever meet zero padding, so this is what the 3D network computes on ``x.unsqueeze(2)``, with 2D
convolutions; gradients reach the centre taps of the 3D weights, and hooks on any submodule fire for both inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck

from medzoo.encoders.base import check_encoder_input
from medzoo.encoders.dual import ShortcutA, make_dual, plain_2d, shared_2d_kernels
from medzoo.encoders.features import stage_contract

__all__ = ["ResNetEncoder", "RESNET_SPECS", "DEFAULT_WIDTHS", "STAGE_MODULES", "check_resnet_options",
           "dilations_for", "resnet_channels"]

DEFAULT_WIDTHS = (64, 128, 256, 512)
STAGE_MODULES = ("act", "layer1", "layer2", "layer3", "layer4")  # the submodule whose output is each stage's map
NORMS = ("batch", "instance", "group", "syncbatch")
DEFAULT_ACT: tuple[str, dict[str, Any]] = ("relu", {"inplace": True})

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


def resnet_channels(depth: int, widths: Sequence[int] | None = None) -> tuple[int, ...]:
    """The five map widths ``(stem, layer1 .. layer4)`` of a ResNet of this depth and stage widths."""
    widths = tuple(int(w) for w in (widths or DEFAULT_WIDTHS))
    expansion = 4 if RESNET_SPECS[depth][0] == "bottleneck" else 1
    return (widths[0],) + tuple(w * expansion for w in widths)


def _replace_children(net: nn.Module, kind: type | tuple[type, ...], make: Any) -> None:
    """Put ``make(child)`` in place of every submodule of ``net`` that is a ``kind``."""
    for parent in list(net.modules()):
        for key, child in list(parent._modules.items()):
            if isinstance(child, kind):
                parent._modules[key] = make(child)


def check_resnet_options(depth: int, widths: Sequence[int] | None, shortcut: str | None, norm: Any, act: Any,
                         who: str) -> tuple[tuple[int, ...], str]:
    """Validate ResNet options before anything is built; returns ``(widths, shortcut)`` with defaults filled in.

    ``norm`` is tried on every stage width (a group count must divide each), ``act`` is built once.

    Raises:
        ValueError: naming the option, the value and what was expected.
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"{who}: ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}")
    widths = tuple(int(w) for w in (widths or DEFAULT_WIDTHS))
    if len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"{who}: widths must be four positive ints, got {widths!r}")
    shortcut = (shortcut or RESNET_SPECS[depth][2]).upper()
    if shortcut not in ("A", "B"):
        raise ValueError(f"{who}: shortcut must be 'A' or 'B', got {shortcut!r}")
    kind = norm if isinstance(norm, str) else norm[0] if isinstance(norm, Sequence) and norm else None
    if not isinstance(kind, str) or kind.lower() not in NORMS:
        raise ValueError(f"{who}: norm must be one of {list(NORMS)}, as a name or (name, options), got {norm!r}")
    try:
        for channels in sorted(set(resnet_channels(depth, widths))):
            get_norm_layer(name=norm, spatial_dims=3, channels=channels)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who}: norm {norm!r}: {err} (for example ('group', {{'num_groups': 8}}), where the "
                         "group count divides every stage width)") from None
    try:
        get_act_layer(name=act)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{who}: act {act!r}: {err}") from None
    return widths, shortcut


def _set_norm_and_act(net: nn.Module, norm: Any, act: Any) -> None:
    """Every norm layer of ``net`` becomes ``norm`` over the same channels, and the stem and every residual block
    use ``act`` (MONAI's ``get_norm_layer`` / ``get_act_layer`` specs)."""
    _replace_children(net, nn.BatchNorm3d, lambda bn: get_norm_layer(name=norm, spatial_dims=3,
                                                                      channels=bn.num_features))
    for module in net.modules():
        if isinstance(module, (ResNet, ResNetBlock, ResNetBottleneck)):
            module.act = get_act_layer(name=act)


def _shortcuts_as_modules(net: nn.Module) -> None:
    """MONAI's type-A shortcut (a ``partial`` of a bound method) becomes a :class:`ShortcutA` module that runs on
    volumes and images alike (numerically the same)."""
    for block in net.modules():
        ds = getattr(block, "downsample", None)
        if isinstance(ds, partial):
            block.downsample = ShortcutA(ds.keywords["planes"], ds.keywords["stride"])


def _dilate(layer: nn.Sequential, dilation: int) -> None:
    """Give every block of ``layer`` stride 1 and dilate its 3x3 convolutions (padding = dilation), as MedicalNet."""
    for block in layer:
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv3d)):
            conv.stride = (1, 1, 1)
            if conv.kernel_size[0] > 1:
                conv.dilation = conv.padding = (dilation,) * 3
        block.stride = 1
        if isinstance(block.downsample, ShortcutA):
            block.downsample.stride = 1


class ResNetEncoder(ResNet):
    """A MONAI 3D ResNet encoder with MedicalNet's geometry options, any norm, and a 2D path on the same modules.

    Use :func:`medzoo.create_encoder` to build one by name.

    Args:
        depth: 10, 18, 34, 50, 101, 152 or 200.
        in_channels: input channels.
        output_stride: 32, 16 or 8 (8 = MedicalNet: layer3/4 dilated 2/4 instead of strided).
        widths: the four stage widths (default 64, 128, 256, 512); small widths make tiny test models.
        shortcut: "A" or "B" (default: MedicalNet's per depth; B for 10/50/101/152/200, A for 18/34).
        bias_downsample: bias on the B-shortcut convolution (MedicalNet has none).
        norm: every norm layer, as MONAI's ``get_norm_layer`` spec: ``"batch"`` (default, MedicalNet's),
            ``"instance"``, ``("group", {"num_groups": 8})`` or ``"syncbatch"``.
        act: every activation, as MONAI's ``get_act_layer`` spec (default ReLU).
        out_indices: the stages to return (default all five; see :mod:`medzoo.encoders.features`). Stages after the
            last selected one are not computed (their weights stay, so full checkpoints still load).
        name: the registered name, for messages and metadata.

    Shapes:
        ``x [B, C, D, H, W]`` -> maps ``[B, out_channels[i], D/r, H/r, W/r]`` with ``r = reductions[i]``;
        ``x [B, C, H, W]`` -> 2D maps ``[B, out_channels[i], H/r, W/r]``; five maps unless ``out_indices``.

    Example:
        >>> enc = ResNetEncoder(18, widths=(8, 16, 32, 64), output_stride=8)
        >>> [tuple(f.shape) for f in enc(torch.zeros(1, 1, 16, 32, 32))][-1]
        (1, 64, 2, 4, 4)
        >>> [tuple(f.shape) for f in enc(torch.zeros(1, 1, 32, 32))][-1]
        (1, 64, 4, 4)
        >>> enc.feature_info.module_name()
        ['act', 'layer1', 'layer2', 'layer3', 'layer4']
    """

    spatial_dims = 3

    def __init__(self, depth: int, *, in_channels: int = 1, output_stride: int = 32,
                 widths: Sequence[int] | None = None, shortcut: str | None = None,
                 bias_downsample: bool | None = None, norm: Any = "batch", act: Any = DEFAULT_ACT,
                 out_indices: Sequence[int] | int | None = None, name: str | None = None) -> None:
        name = name or f"resnet{depth}"
        widths, shortcut = check_resnet_options(depth, widths, shortcut, norm, act, name)
        block, layers, _, default_bias = RESNET_SPECS[depth]
        bias = default_bias if bias_downsample is None else bool(bias_downsample)
        dilations = dilations_for(output_stride)
        super().__init__(block, list(layers), list(widths), spatial_dims=3, n_input_channels=in_channels,
                         conv1_t_size=7, conv1_t_stride=2, shortcut_type=shortcut, bias_downsample=bias,
                         feed_forward=False)
        del self.avgpool  # pooling belongs to the heads
        _shortcuts_as_modules(self)
        _set_norm_and_act(self, norm, act)
        for layer, dilation in zip((self.layer3, self.layer4), dilations):
            if dilation > 1:
                _dilate(layer, dilation)
        make_dual(self)
        self.name, self.depth, self.block, self.layers = name, depth, block, layers
        self.widths, self.shortcut, self.bias_downsample, self.in_channels = widths, shortcut, bias, in_channels
        self.output_stride = output_stride
        strides = (2, 4, 8, min(16, output_stride), output_stride)
        self.feature_info, self.out_indices = stage_contract(resnet_channels(depth, widths), strides, STAGE_MODULES,
                                                             out_indices, name)
        self.out_channels = tuple(self.feature_info.channels())
        self.reductions = tuple((s, s, s) for s in self.feature_info.reduction())
        self.feature_dim = self.out_channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """The maps of the selected stages (all five by default), 2D maps for a 4-D input."""
        check_encoder_input(x, self.in_channels, self.name)
        last = self.out_indices[-1]
        maps = [self.act(self.bn1(self.conv1(x)))]
        h = maps[0] if self.no_max_pool else self.maxpool(maps[0])
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[:last]:
            h = layer(h)
            maps.append(h)
        return [maps[i] for i in self.out_indices]

    @contextlib.contextmanager
    def reuse_2d_weights(self) -> Iterator[None]:
        """Within the block, image inputs share one set of sliced 2D kernels instead of slicing per call.

        Series encoding calls the encoder once per chunk of slices; this removes the per-call cost of slicing and
        copying the kernels. Do not change the weights inside the block, and do not use it around
        activation-checkpointed calls whose recompute runs after the block.

        Example:
            >>> enc = ResNetEncoder(10, widths=(8, 16, 32, 64))
            >>> with enc.reuse_2d_weights():
            ...     a, b = enc(torch.zeros(2, 1, 32, 32)), enc(torch.zeros(3, 1, 32, 32))
            >>> a[-1].shape[0], b[-1].shape[0]
            (2, 3)
        """
        with shared_2d_kernels(self):
            yield

    def to_2d(self) -> ResNetEncoder:
        """A copy made of ordinary 2D layers (centre-slice ``Conv2d``, ``BatchNorm2d``, ...), for exports.

        It computes what this encoder computes on images ``[B, C, H, W]``, with the same parameter names (2D
        shapes), buffers and train/eval flags; it takes images only.
        """
        return plain_2d(self)  # type: ignore[return-value]

    @property
    def _twin2d(self) -> nn.Module:
        """A parameter-free (meta-device) :meth:`to_2d` skeleton, for exporters that fill it with sliced weights."""
        return self.to_2d().to("meta")

    def architecture(self) -> dict[str, Any]:
        """The architecture contract written into weight metadata and checked when loading."""
        return {
            "encoder": self.name, "depth": self.depth, "block": self.block, "layers": list(self.layers),
            "widths": list(self.widths), "shortcut": self.shortcut, "bias_downsample": self.bias_downsample,
            "in_channels": self.in_channels, "output_stride": self.output_stride,
        }

    def extra_repr(self) -> str:
        return f"name={self.name}, output_stride={self.output_stride}, shortcut={self.shortcut}"
