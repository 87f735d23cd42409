"""``medzoo align``: align a folder of chest X-rays to a reference, or train the alignment network.

Example:
    medzoo align --train --reference ref.png images/ --out align.safetensors --steps 300
    medzoo align --weights align.safetensors --reference ref.png images/ --out aligned/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``align`` subcommand."""
    p = subparsers.add_parser("align", help="align CXRs to a reference (Liu et al. 2019), or train the aligner",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input_dir", help="folder of PNG/JPEG images")
    p.add_argument("--reference", required=True, help="the canonical reference image")
    p.add_argument("--out", required=True, help="output folder (align) or weights file (--train)")
    p.add_argument("--weights", help="alignment weights (.safetensors) to align with")
    p.add_argument("--train", action="store_true", help="train the alignment network on input_dir instead")
    p.add_argument("--steps", type=int, default=300, help="training steps (--train)")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size (--train)")
    p.add_argument("--perceptual-weight", type=float, default=0.1, help="weight of the perceptual loss (--train)")
    p.add_argument("--encoder", default="resnet10", help="frozen encoder of the perceptual loss (--train)")
    p.add_argument("--seed", type=int, default=0, help="seed (--train)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"medzoo align: input folder not found: {folder}")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"medzoo align: no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    return files


def _train(args: argparse.Namespace, files: list[Path]) -> int:
    import torch

    from medzoo.encoders import create_encoder
    from medzoo.models.align import AlignmentStage, load_gray, train_alignment

    ref = load_gray(args.reference)
    imgs = []
    for f in files:
        img = load_gray(f)
        if img.shape != ref.shape:
            img = torch.nn.functional.interpolate(img[None], size=ref.shape[-2:], mode="bilinear", antialias=True)[0]
        imgs.append(img)
    torch.manual_seed(args.seed)
    encoder = create_encoder(args.encoder, widths=(8, 16, 32, 64)) if args.perceptual_weight > 0 else None
    net = train_alignment(torch.stack(imgs), ref, encoder=encoder, steps=args.steps, batch_size=args.batch_size,
                          perceptual_weight=args.perceptual_weight, seed=args.seed)
    out = AlignmentStage(net, ref).save(args.out)
    print(f"trained on {len(files)} images for {args.steps} steps -> {out}")
    return 0


def _align(args: argparse.Namespace, files: list[Path]) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from medzoo.data.imageio import write_png
    from medzoo.models.align import AlignmentStage, load_gray

    stage = AlignmentStage.load(args.weights, args.reference)
    out = Path(args.out)
    print(f"{'image':<40} {'mse before':>11} {'mse after':>10}")
    for f in tqdm(files, disable=args.quiet or not sys.stderr.isatty(), desc="align"):
        x = load_gray(f)[None]
        ref = stage.reference
        before = torch.nn.functional.interpolate(x, size=ref.shape[-2:], mode="bilinear", antialias=True)
        aligned = stage(x)
        write_png(out / (f.stem + ".png"), np.rint(aligned[0, 0].clamp(0, 1).numpy() * 255).astype(np.uint8))
        mse_before, mse_after = ((before - ref) ** 2).mean().item(), ((aligned - ref) ** 2).mean().item()
        print(f"{f.name:<40} {mse_before:>11.5f} {mse_after:>10.5f}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Train (``--train``) or align every image of ``input_dir`` into ``--out``."""
    files = _images(Path(args.input_dir))
    if args.train:
        return _train(args, files)
    if not args.weights:
        raise SystemExit("medzoo align: --weights is required to align (or pass --train to train)")
    return _align(args, files)
