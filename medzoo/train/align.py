"""Training the CXR aligner (:class:`~medzoo.models.align.AlignNet`) without labels: ``medzoo align --train``.

- **consistency loss**: the mean squared pixel distance between the aligned image and the reference;
- **perceptual loss**: the mean squared distance between the feature maps of a *frozen* medzoo encoder (eval mode,
  no gradients into its weights) for the aligned image and for the reference, averaged over the chosen levels.

Each step also perturbs the training images by small random affines (a self-supervised augmentation: the target is
always the reference), which widens the range of poses the network sees. This is a loop of its own, not the
Trainer's: it has no datasets, no labels and no tasks, only images and one reference.

Example:
    >>> import torch
    >>> ref = torch.zeros(1, 1, 32, 32); ref[..., 8:24, 10:20] = 1
    >>> net = train_alignment(ref.repeat(4, 1, 1, 1), ref, steps=2, batch_size=2)
    >>> net(ref).shape
    torch.Size([1, 2, 3])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medzoo.data.imageio import load_gray, write_png
from medzoo.encoders import create_encoder
from medzoo.models.align import AlignmentStage, AlignNet, random_affine, warp

__all__ = ["AlignTrainConfig", "alignment_losses", "train_alignment", "train_alignment_from_config"]

log = logging.getLogger(__name__)


@dataclass
class AlignTrainConfig:
    """Training settings of ``medzoo align --train`` (``configs/align/cxr.yaml``).

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


def _resized(img: Tensor, size: int) -> Tensor:
    if img.shape[-2:] == (size, size):
        return img
    return F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def train_alignment_from_config(cfg: AlignTrainConfig) -> Path:
    """Train on ``cfg.images`` and write the weights (and a ``"mean"`` reference); returns the weights path."""
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
