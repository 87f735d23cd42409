"""Chest X-ray alignment to a canonical reference without annotation (Liu et al., ICCV 2019, "Align, Attend and
Locate"): the network and the alignment stage.

A small network (:class:`AlignNet`: strided convs, global average pooling, a linear layer) reads a downsized copy of
a CXR and regresses an affine transform ``theta [B, 2, 3]`` (initialised to the identity). The image is warped with
``F.affine_grid`` / ``F.grid_sample``: ``aligned(p) = image(theta @ [p, 1])`` in normalised ``[-1, 1]`` coordinates
(``align_corners=False``), so an image made by warping the reference with ``A`` is undone by ``theta = A^-1``.

:class:`AlignmentStage` wraps a trained network and its reference as a preprocessing stage (``stage(x)`` returns
the aligned ``x``), built from weights + a reference image (:meth:`AlignmentStage.load`). The network is trained
without labels by :mod:`medzoo.train.align`; ``medzoo align`` (``medzoo.cli.align_cmd``) aligns a folder of images
or trains.

Example:
    >>> import torch
    >>> net = AlignNet(size=32)
    >>> x = torch.rand(2, 1, 64, 64)
    >>> torch.allclose(warp(x, net(x)), x, atol=1e-5)  # identity at initialisation
    True
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from medzoo.data.imageio import load_gray

__all__ = ["AlignNet", "AlignmentStage", "random_affine", "warp"]
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def warp(x: Tensor, theta: Tensor, size: Sequence[int] | None = None) -> Tensor:
    """Warp images ``x [B, C, H, W]`` by affines ``theta [B, 2, 3]`` (bilinear, zeros outside).

    Args:
        x: images.
        theta: output -> input sampling transforms in normalised coordinates.
        size: output ``(H, W)`` (default: the input's).
    """
    h, w = (x.shape[-2], x.shape[-1]) if size is None else (int(size[0]), int(size[1]))
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(n: int, max_rot_deg: float = 10.0, max_shift: float = 0.1, max_log_scale: float = 0.1,
                  generator: torch.Generator | None = None) -> Tensor:
    """``n`` random affines ``[n, 2, 3]``: rotation, isotropic scale and shift drawn uniformly within the bounds.

    ``theta = [[s cos a, -s sin a, tx], [s sin a, s cos a, ty]]``; shifts are in normalised units (1 = half the
    image side), ``s = exp(u)`` with ``|u| <= max_log_scale``.
    """
    u = torch.rand(n, 4, generator=generator) * 2 - 1
    a = u[:, 0] * math.radians(max_rot_deg)
    s = torch.exp(u[:, 1] * max_log_scale)
    t = u[:, 2:] * max_shift
    row0 = torch.stack([s * torch.cos(a), -s * torch.sin(a), t[:, 0]], dim=1)
    row1 = torch.stack([s * torch.sin(a), s * torch.cos(a), t[:, 1]], dim=1)
    return torch.stack([row0, row1], dim=1)


class AlignNet(nn.Module):
    """Regress an affine transform that maps a CXR onto the reference pose.

    Args:
        in_channels: image channels.
        widths: channels of the strided 3x3 conv blocks (each halves the resolution).
        size: side of the square copy the network reads (images are resized to it; the warp applies at any size).

    Shapes:
        ``forward(x [B, C, H, W]) -> theta [B, 2, 3]``.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (8, 16, 32, 32), size: int = 64) -> None:
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.GroupNorm(1, w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 6)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor(IDENTITY))
        self.in_channels, self.widths, self.size = in_channels, tuple(int(w) for w in widths), int(size)

    def forward(self, x: Tensor) -> Tensor:
        """``theta [B, 2, 3]`` for images ``x [B, C, H, W]``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"AlignNet needs [B, {self.in_channels}, H, W], got shape {tuple(x.shape)}")
        small = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        z = self.features(small).mean(dim=(2, 3))
        return self.fc(z).view(-1, 2, 3)


class AlignmentStage(nn.Module):
    """A trained :class:`AlignNet` with its reference, used as a preprocessing stage: ``stage(x)`` = aligned ``x``.

    Args:
        net: the alignment network.
        reference: ``[1, C, H, W]`` or ``[C, H, W]``; aligned outputs have its size unless ``keep_size``.
        keep_size: output at the input's size instead of the reference's.

    Example:
        >>> stage = AlignmentStage(AlignNet(size=32), torch.rand(1, 1, 48, 48))
        >>> stage(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 1, 48, 48])
    """

    def __init__(self, net: AlignNet, reference: Tensor, keep_size: bool = False) -> None:
        super().__init__()
        self.net = net.eval()
        self.register_buffer("reference", reference[None] if reference.dim() == 3 else reference)
        self.keep_size = keep_size

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Aligned images ``[B, C, H_ref, W_ref]`` (or ``[B, C, H, W]`` with ``keep_size``)."""
        size = None if self.keep_size else self.reference.shape[-2:]
        return warp(x, self.net(x), size)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the network to a ``.safetensors`` file (architecture in its metadata; the reference stays a file)."""
        meta = {"medzoo.align": json.dumps({"in_channels": self.net.in_channels, "widths": list(self.net.widths),
                                            "size": self.net.size})}
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(p), metadata=meta)
        return p

    @classmethod
    def load(cls, weights: str | os.PathLike, reference: str | os.PathLike | Tensor,
             keep_size: bool = False) -> AlignmentStage:
        """Build from a file written by :meth:`save` and a reference image (path or tensor)."""
        try:
            with safe_open(str(weights), framework="pt") as fh:
                arch = json.loads((fh.metadata() or {})["medzoo.align"])
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except KeyError as exc:
            raise ValueError(f"{weights}: not an alignment weights file (no 'medzoo.align' metadata)") from exc
        except Exception as exc:
            raise ValueError(f"{weights}: cannot read alignment weights ({type(exc).__name__}: {exc})") from exc
        net = AlignNet(arch["in_channels"], arch["widths"], arch["size"])
        net.load_state_dict(state, strict=True)
        ref = reference if isinstance(reference, Tensor) else load_gray(reference)
        return cls(net, ref, keep_size=keep_size)
