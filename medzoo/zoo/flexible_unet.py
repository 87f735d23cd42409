"""medzoo's ResNets as MONAI ``FlexibleUNet`` backbones (``monai.networks.blocks.BaseEncoder``).

``FlexibleUNet`` finds its encoder by name in MONAI's backbone registry and needs five maps, each half the size of
the one before (strides 2, 4, 8, 16, 32), whose channels the registry declares. A medzoo ResNet at
``output_stride=32`` returns exactly that, for 2D images (``spatial_dims=2``: the 2D path on the same 3D weights)
and 3D volumes. Registration changes MONAI's global registry, so it is explicit, never done on import:

- :func:`register_flexible_unet_backbones` registers ``medzoo-resnet10`` .. ``medzoo-resnet200`` (default widths,
  batch norm, MedicalNet's shortcut per depth);
- :func:`register_flexible_unet_backbone` registers a named variant with its own widths, norm, activation or
  shortcut (tiny test networks, group norm for small batches);
- MONAI's own ``FLEXUNET_BACKBONE.register_class("medzoo.zoo.flexible_unet.FlexUNetResNet")`` does the same as
  the first.

``pretrained`` takes a medzoo weights reference (a catalog name such as ``"resnet18.medicalnet23"``, an export
folder, a weight file or ``medicalnet:PATH``), loaded into the encoder with a report; ``True`` is refused because a
depth has several pretrained sets (MedicalNet's 8- and 23-dataset weights), and the choice should be visible.

Example:
    >>> import torch
    >>> from monai.networks.nets import FlexibleUNet
    >>> register_flexible_unet_backbone("medzoo-resnet10-tiny", "resnet10", widths=(8, 16, 32, 64))
    'medzoo-resnet10-tiny'
    >>> net = FlexibleUNet(1, 2, backbone="medzoo-resnet10-tiny", spatial_dims=2, decoder_channels=(32, 16, 8, 8, 4))
    >>> net(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 2, 64, 64])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

from medzoo.encoders.resnet import DEFAULT_ACT, RESNET_SPECS, ResNetEncoder, check_resnet_options, resnet_channels
from medzoo.zoo.loading import load_pretrained

__all__ = ["FlexUNetResNet", "register_flexible_unet_backbones", "register_flexible_unet_backbone"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _depth(encoder: str) -> int:
    match = re.fullmatch(r"resnet(\d+)", encoder)
    if match is None or int(match.group(1)) not in RESNET_SPECS:
        raise ValueError(f"FlexibleUNet backbone: encoder must be one of "
                         f"{[f'resnet{d}' for d in RESNET_SPECS]}, got {encoder!r}")
    return int(match.group(1))


class FlexUNetResNet(ResNetEncoder, BaseEncoder):
    """A medzoo ResNet (output stride 32, five maps) behind MONAI's ``BaseEncoder`` interface.

    Args:
        encoder: ``resnet10`` .. ``resnet200``.
        spatial_dims: 2 (images ``[B, C, H, W]``, through the 2D path) or 3 (volumes ``[B, C, D, H, W]``).
        in_channels: input channels.
        pretrained: False, or a medzoo weights reference (see the module docstring).
        widths, shortcut, norm, act: as for :class:`~medzoo.encoders.ResNetEncoder`.

    Shapes: ``x [B, C, *s]`` with ``len(s) == spatial_dims`` -> five maps ``[B, c_i, *ceil(s / 2^(i+1))]``.
    FlexibleUNet's decoder needs every ``s`` to be a multiple of 32, as with MONAI's own ResNet backbones.
    """

    variants: ClassVar[dict[str, dict[str, Any]]] = {f"medzoo-resnet{d}": {"encoder": f"resnet{d}"}
                                                     for d in RESNET_SPECS}

    def __init__(self, encoder: str = "resnet18", spatial_dims: int = 3, in_channels: int = 1,
                 pretrained: bool | str = False, *, widths: Sequence[int] | None = None, shortcut: str | None = None,
                 norm: Any = "batch", act: Any = DEFAULT_ACT) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"FlexibleUNet backbone {encoder}: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        super().__init__(_depth(encoder), in_channels=in_channels, output_stride=32, widths=widths,
                         shortcut=shortcut, norm=norm, act=act, name=encoder)
        self.input_dims = int(spatial_dims)
        if pretrained is True:
            raise ValueError(f"FlexibleUNet backbone {encoder}: name the weights instead of pretrained=True, for "
                             f"example pretrained='{encoder}.medicalnet23' (catalog entries: `medzoo list`)")
        if pretrained:

            load_pretrained(self, pretrained, parts=["encoder"])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """Five maps at strides 2 .. 32 of an input with ``spatial_dims`` spatial axes."""
        if x.dim() != self.input_dims + 2:
            raise ValueError(f"{self.name} FlexibleUNet backbone built for spatial_dims={self.input_dims}: expected "
                             f"a {self.input_dims + 2}-D input [B, C, ...], got shape {tuple(x.shape)}")
        return super().forward(x)

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """The registry names, one per variant."""
        return list(cls.variants)

    @classmethod
    def get_encoder_parameters(cls) -> list[dict[str, Any]]:
        """Constructor arguments per variant (FlexibleUNet sets ``spatial_dims``, ``in_channels``, ``pretrained``)."""
        return [{**opts, "spatial_dims": 3, "in_channels": 1, "pretrained": False} for opts in cls.variants.values()]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the five maps per variant."""
        return [resnet_channels(_depth(v["encoder"]), v.get("widths")) for v in cls.variants.values()]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Five maps for every variant."""
        return [5] * len(cls.variants)


def register_flexible_unet_backbones() -> list[str]:
    """Register every :class:`FlexUNetResNet` variant in MONAI's ``FLEXUNET_BACKBONE``; returns their names.

    Example:
        >>> "medzoo-resnet18" in register_flexible_unet_backbones()
        True
    """
    FLEXUNET_BACKBONE.register_class(FlexUNetResNet)
    return FlexUNetResNet.get_encoder_names()


def register_flexible_unet_backbone(name: str, encoder: str = "resnet18", *, widths: Sequence[int] | None = None,
                                    shortcut: str | None = None, norm: Any = "batch", act: Any = DEFAULT_ACT) -> str:
    """Register a medzoo ResNet variant as FlexibleUNet backbone ``name`` (with the default family); returns ``name``.

    Args:
        name: the backbone name (letters, digits, ``_ . -``), not one of MONAI's own backbones.
        encoder: ``resnet10`` .. ``resnet200``.
        widths, shortcut, norm, act: as for :class:`~medzoo.encoders.ResNetEncoder`.

    Raises:
        ValueError: a bad name or encoder, a name MONAI uses, or a name already registered with other options.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"FlexibleUNet backbone name must be letters, digits, '_', '.' or '-', got {name!r}")
    taken = FLEXUNET_BACKBONE.register_dict.get(name)
    if taken is not None and not issubclass(taken["type"], FlexUNetResNet):
        raise ValueError(f"FlexibleUNet backbone {name!r} is MONAI's own {taken['type'].__name__}; choose another name")
    opts: dict[str, Any] = {"encoder": encoder, "widths": None if widths is None else tuple(int(w) for w in widths),
                            "shortcut": shortcut, "norm": norm, "act": act}
    if name in FlexUNetResNet.variants and FlexUNetResNet.variants[name] != opts:
        raise ValueError(f"FlexibleUNet backbone {name!r} is already registered with {FlexUNetResNet.variants[name]}")
    check_resnet_options(_depth(encoder), widths, shortcut, norm, act, f"FlexibleUNet backbone {name}")
    FlexUNetResNet.variants[name] = opts
    register_flexible_unet_backbones()
    return name
