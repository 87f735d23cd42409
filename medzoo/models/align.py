"""Chest X-ray alignment to a canonical reference without annotation (Liu et al., ICCV 2019, "Align, Attend and
Locate").

A small network (:class:`AlignNet`: strided convs, global average pooling, a linear layer) reads a downsized copy of
a CXR and regresses an affine transform ``theta [B, 2, 3]`` (initialised to the identity). The image is warped with
``F.affine_grid`` / ``F.grid_sample``: ``aligned(p) = image(theta @ [p, 1])`` in normalised ``[-1, 1]`` coordinates
(``align_corners=False``), so an image made by warping the reference with ``A`` is undone by ``theta = A^-1``.

Training needs no labels (:func:`train_alignment`):

- **consistency loss**: the mean squared pixel distance between the aligned image and the reference;
- **perceptual loss**: the mean squared distance between the feature maps of a *frozen* medzoo encoder (eval mode,
  no gradients into its weights) for the aligned image and for the reference, averaged over the chosen levels.

Each step also perturbs the training images by small random affines (a self-supervised augmentation: the target is
always the reference), which widens the range of poses the network sees.

:class:`AlignmentStage` wraps a trained network and its reference as a preprocessing stage (``stage(x)`` returns
the aligned ``x``), built from weights + a reference image (:class:`AlignConfig`, the ``align: {weights, reference}``
block of a model config). ``medzoo align`` (``medzoo.cli.align_cmd``) aligns a folder of images or trains.

Example:
    >>> import torch
    >>> net = AlignNet(size=32)
    >>> x = torch.rand(2, 1, 64, 64)
    >>> torch.allclose(warp(x, net(x)), x, atol=1e-5)  # identity at initialisation
    True
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AlignConfig", "AlignNet", "AlignTrainConfig", "AlignmentStage", "alignment_losses", "load_gray",
           "random_affine", "train_alignment", "train_alignment_from_config", "warp"]

log = logging.getLogger(__name__)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class AlignConfig:
    """The ``align:`` block of a model config: a trained :class:`AlignNet` and its reference image.

    Attributes:
        weights: a ``.safetensors`` file written by :meth:`AlignmentStage.save`.
        reference: the canonical reference image (PNG/JPEG/DICOM/NIfTI, read by ``medzoo.data.imageio``).
    """

    weights: str
    reference: str


@dataclass
class AlignTrainConfig:
    """Training settings of ``medzoo align --train`` (``configs/experiments/align.yaml``).

    Attributes:
        images: folder of PNG/JPEG training images (no labels needed).
        out: the weights file to write (``.safetensors``).
        reference: a reference image, or ``"mean"``: the pixel mean of the training images, written next to the
            weights as ``<out stem>.reference.png``.
        image_size: images (and a ``"mean"`` reference) are resized to this square size.
        steps, batch_size, lr: optimisation (Adam).
        perceptual_weight: weight of the perceptual loss (0: consistency only, no encoder).
        encoder, widths, levels: the frozen encoder of the perceptual loss and the maps it compares.
        max_images: use at most this many images (sorted by name); None: all.
        seed: seed of the run.
    """

    images: str
    out: str
    reference: str = "mean"
    image_size: int = 96
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    perceptual_weight: float = 0.1
    encoder: str = "resnet10"
    widths: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    levels: list[int] = field(default_factory=lambda: [1, 2])
    max_images: int | None = None
    seed: int = 0


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


def _frozen(encoder: nn.Module) -> nn.Module:
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


def alignment_losses(aligned: Tensor, reference: Tensor, encoder: nn.Module | None = None,
                     levels: Sequence[int] = (1, 2), perceptual_weight: float = 0.1) -> dict[str, Tensor]:
    """Consistency + perceptual losses of aligned images against the reference.

    Args:
        aligned: ``[B, C, H, W]``.
        reference: ``[1, C, H, W]`` (broadcast over the batch) or ``[B, C, H, W]``.
        encoder: a frozen medzoo encoder (its 2D path); None skips the perceptual term.
        levels: indices of the encoder maps compared.
        perceptual_weight: weight of the perceptual term in ``loss``.

    Returns:
        ``{"loss", "consistency", "perceptual"}`` scalars.
    """
    ref = reference.expand_as(aligned)
    consistency = F.mse_loss(aligned, ref)
    if encoder is None:
        perceptual = aligned.sum() * 0.0
    else:
        fa, fr = encoder(aligned), encoder(ref)
        perceptual = torch.stack([F.mse_loss(fa[i], fr[i].detach()) for i in levels]).mean()
    return {"loss": consistency + perceptual_weight * perceptual, "consistency": consistency,
            "perceptual": perceptual}


def train_alignment(images: Tensor, reference: Tensor, *, encoder: nn.Module | None = None, steps: int = 300,
                    batch_size: int = 16, lr: float = 3e-3, perceptual_weight: float = 0.1,
                    levels: Sequence[int] = (1, 2), augment: float = 1.0, net: AlignNet | None = None,
                    seed: int = 0) -> AlignNet:
    """Train an :class:`AlignNet` on unlabelled images against one reference.

    Args:
        images: ``[N, C, H, W]`` float images (same size as the reference; intensities like the reference's).
        reference: ``[1, C, H, W]`` or ``[C, H, W]``.
        encoder: the frozen encoder of the perceptual loss (set to eval mode, gradients off); None: consistency only.
        steps: optimisation steps (Adam).
        batch_size: images per step (drawn with replacement).
        lr: learning rate.
        perceptual_weight: weight of the perceptual loss.
        levels: encoder maps used by the perceptual loss.
        augment: scale of the random affine perturbation added each step (0: none; 1: up to 10 degrees, 10 % shift,
            10 % scale).
        net: a network to continue training (default: a new ``AlignNet(size=min(64, H))``).
        seed: seeds the network initialisation, batch sampling and augmentation.

    Returns:
        The trained network (eval mode).

    Example:
        >>> ref = torch.zeros(1, 1, 32, 32); ref[..., 8:24, 10:20] = 1
        >>> net = train_alignment(ref.repeat(4, 1, 1, 1), ref, steps=2, batch_size=2)
        >>> net(ref).shape
        torch.Size([1, 2, 3])
    """
    reference = reference[None] if reference.dim() == 3 else reference
    if images.dim() != 4 or images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"images {tuple(images.shape)} must be [N, C, H, W] matching the reference "
                         f"{tuple(reference.shape)}")
    gen = torch.Generator().manual_seed(seed)
    if net is None:
        torch.manual_seed(seed)
        net = AlignNet(images.shape[1], size=min(64, int(images.shape[-1])))
    if encoder is not None:
        encoder = _frozen(encoder)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        batch = images[idx]
        if augment > 0:
            batch = warp(batch, random_affine(batch_size, 10 * augment, 0.1 * augment, 0.1 * augment, gen))
        losses = alignment_losses(warp(batch, net(batch)), reference, encoder, levels, perceptual_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("align step %d: loss %.5f (consistency %.5f, perceptual %.5f)", step,
                     losses["loss"].item(), losses["consistency"].item(), losses["perceptual"].item())
    return net.eval()


def load_gray(path: str | os.PathLike) -> Tensor:
    """Read an image file as ``[1, H, W]`` float32 in [0, 1] (8/16-bit scaled by their range; floats min-max)."""
    from medzoo.data.imageio import read_image

    arr, _ = read_image(path)
    arr = np.asarray(arr)
    if arr.ndim == 4 and arr.shape[-1] == 1:  # NIfTI [1, X, Y, 1]
        arr = arr[..., 0]
    if arr.ndim != 3 or arr.shape[0] != 1:
        raise ValueError(f"{path}: expected a single-channel 2D image, got array shape {arr.shape}")
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        out = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    else:
        lo, hi = float(arr.min()), float(arr.max())
        out = (arr.astype(np.float32) - lo) / (hi - lo if hi > lo else 1.0)
    return torch.from_numpy(np.ascontiguousarray(out))


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
        from safetensors.torch import save_file

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
        from safetensors import safe_open

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

    @classmethod
    def from_config(cls, cfg: AlignConfig) -> AlignmentStage:
        """Build from the ``align:`` block of a model config."""
        return cls.load(cfg.weights, cfg.reference)


def _resized(img: Tensor, size: int) -> Tensor:
    if img.shape[-2:] == (size, size):
        return img
    return F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def train_alignment_from_config(cfg: AlignTrainConfig) -> Path:
    """Train on ``cfg.images`` and write the weights (and a ``"mean"`` reference); returns the weights path."""
    from medzoo.data.imageio import write_png
    from medzoo.encoders import create_encoder

    folder = Path(cfg.images)
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg")) \
        if folder.is_dir() else []
    if not files:
        raise ValueError(f"{folder}: no PNG/JPEG images to train the alignment on")
    files = files[: cfg.max_images] if cfg.max_images else files
    images = torch.stack([_resized(load_gray(f), cfg.image_size) for f in files])
    out = Path(cfg.out)
    if cfg.reference == "mean":
        reference = images.mean(0)
        write_png(out.with_name(out.stem + ".reference.png"), np.rint(reference[0].numpy() * 255).astype(np.uint8))
    else:
        reference = _resized(load_gray(cfg.reference), cfg.image_size)
    torch.manual_seed(cfg.seed)
    encoder = (create_encoder(cfg.encoder, widths=tuple(cfg.widths), in_channels=images.shape[1])
               if cfg.perceptual_weight > 0 else None)
    net = train_alignment(images, reference, encoder=encoder, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                          perceptual_weight=cfg.perceptual_weight, levels=cfg.levels, seed=cfg.seed)
    log.info("alignment trained on %d images from %s", len(files), folder)
    return AlignmentStage(net, reference).save(out)
