"""``medzoo align``: align a folder of chest X-rays to a reference, or train the alignment network.

Example:
    medzoo align --train --reference ref.png images/ --out align.safetensors --steps 300
    medzoo align --train -c configs/align/cxr.yaml
    medzoo align --weights align.safetensors --reference ref.png images/ --out aligned/

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
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
    p.add_argument("input_dir", nargs="?", help="folder of PNG/JPEG or DICOM (CR/DX) images")
    p.add_argument("--reference", help="the canonical reference image (--train: default 'mean' of the images)")
    p.add_argument("--out", help="output folder (align) or weights file (--train)")
    p.add_argument("-c", "--config", help="--train: a YAML of AlignTrainConfig (configs/align/cxr.yaml)")
    p.add_argument("--image-size", type=int, default=96, help="training image size (--train)")
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
    from medzoo.data._dicom import is_dicom_file  # a DICOM radiograph may have no extension

    if not folder.is_dir():
        raise SystemExit(f"medzoo align: input folder not found: {folder}")
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and (f.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(f)))
    if not files:
        raise SystemExit(f"medzoo align: no {'/'.join(IMAGE_SUFFIXES)} or DICOM images in {folder}")
    return files


def _train(args: argparse.Namespace) -> int:
    import yaml

    from medzoo.config import from_dict
    from medzoo.train.align import AlignTrainConfig, train_alignment_from_config

    if args.config:
        cfg = from_dict(AlignTrainConfig, yaml.safe_load(Path(args.config).read_text(encoding="utf-8")))
    else:
        missing = [flag for flag, v in (("input_dir", args.input_dir), ("--out", args.out)) if not v]
        if missing:
            raise SystemExit(f"medzoo align --train: {' and '.join(missing)} required (or pass --config)")
        _images(Path(args.input_dir))
        cfg = AlignTrainConfig(images=args.input_dir, out=args.out, reference=args.reference or "mean",
                               steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                               perceptual_weight=args.perceptual_weight, encoder=args.encoder,
                               image_size=args.image_size)
    out = train_alignment_from_config(cfg)
    print(f"trained on {cfg.images} for {cfg.steps} steps -> {out}")
    return 0


def _align(args: argparse.Namespace, files: list[Path]) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from medzoo.data.imageio import load_gray, write_png
    from medzoo.infer.inputs import file_stem
    from medzoo.models.align import AlignmentStage

    stage = AlignmentStage.load(args.weights, args.reference)
    out = Path(args.out)
    print(f"{'image':<40} {'mse before':>11} {'mse after':>10}")
    for f in tqdm(files, disable=args.quiet or not sys.stderr.isatty(), desc="align"):
        x = load_gray(f)[None]
        ref = stage.reference
        before = torch.nn.functional.interpolate(x, size=ref.shape[-2:], mode="bilinear", antialias=True)
        aligned = stage(x)
        write_png(out / (file_stem(f) + ".png"), np.rint(aligned[0, 0].clamp(0, 1).numpy() * 255).astype(np.uint8))
        mse_before, mse_after = ((before - ref) ** 2).mean().item(), ((aligned - ref) ** 2).mean().item()
        print(f"{f.name:<40} {mse_before:>11.5f} {mse_after:>10.5f}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Train (``--train``) or align every image of ``input_dir`` into ``--out``."""
    if args.train:
        return _train(args)
    missing = [flag for flag, v in (("input_dir", args.input_dir), ("--weights", args.weights),
                                    ("--reference", args.reference), ("--out", args.out)) if not v]
    if missing:
        raise SystemExit(f"medzoo align: {', '.join(missing)} required to align (or pass --train to train)")
    return _align(args, _images(Path(args.input_dir)))
