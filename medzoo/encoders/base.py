"""The encoder contract, written once.

Every encoder in medzoo is an ``nn.Module`` that:

- takes a volume ``x [B, C, D, H, W]`` (3D convolutions) or an image ``x [B, C, H, W]`` (the 2D path: a CXR or one
  CT slice, computed by the same modules with 2D convolutions that share the 3D weights, so hooks fire on both)
  and returns a list of five feature maps ``[stem, layer1, layer2, layer3, layer4]``, 3D maps for a volume and 2D
  maps for an image (only the stages in ``out_indices`` when the encoder was built with a selection);
- declares ``feature_info`` (:class:`medzoo.encoders.features.FeatureInfo`): channels, reduction and the name of the
  submodule that produces each stage's map, as timm's ``features_only`` models do;
- declares ``out_channels``: the channel count of each returned map;
- declares ``reductions``: for each map, the per-axis stride ``(d, h, w)`` relative to the input (for a 2D input,
  the last two entries apply);
- declares ``output_stride`` (the reduction of the last map in-plane), ``spatial_dims`` (3) and ``feature_dim``
  (``out_channels[-1]``, the width of a pooled feature);
- describes itself through ``architecture()``: a plain dict that the zoo writes into weight metadata and checks when
  loading (encoder name, block, layers, widths, shortcut, in_channels, output_stride).

Decoders and heads read only this contract. ``tests/encoders/test_encoders.py`` checks every registered encoder
against it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Encoder", "check_encoder_input"]


@runtime_checkable
class Encoder(Protocol):
    """What decoders, heads and the zoo may rely on (see the module docstring)."""

    out_channels: tuple[int, ...]
    feature_info: Any
    reductions: tuple[tuple[int, int, int], ...]
    output_stride: int
    spatial_dims: int
    feature_dim: int

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]: ...

    def architecture(self) -> dict[str, Any]: ...


def check_encoder_input(x: torch.Tensor, in_channels: int, name: str) -> None:
    """Raise a clear error unless ``x`` is ``[B, C, H, W]`` or ``[B, C, D, H, W]`` with ``C == in_channels``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(
            f"{name}: expected an image [B, C, H, W] or a volume [B, C, D, H, W], got shape {tuple(x.shape)}; "
            "a series [B, N, C, ...] goes through MultiTaskModel with a pad_mask"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"{name}: expected {in_channels} input channel(s) at dim 1, got shape {tuple(x.shape)}")
