"""``medzoo prepare KIND ROOT --out DIR``: write a prepared, memory-mappable cache of a dataset.

Example:
    medzoo prepare nih-cxr14 data/nih --out cache/nih --size 224
    medzoo prepare covidx-ct data/covidx-ct --out cache/ct --option level=series --size 128
    medzoo prepare msd data/Task06_Lung --out cache/lung --spacing 1.5 1.5 1.5 --patch 96 96 96

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

__all__ = ["add_parser", "run", "preset_for"]

log = logging.getLogger(__name__)

_VOLUME_KINDS = {"msd", "nifti-folder", "medicalnet-list"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``prepare`` subcommand."""
    p = subparsers.add_parser("prepare", help="decode and preprocess a dataset once into a memory-mapped cache",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", help="dataset kind, as for medzoo.data.open_dataset (e.g. nih-cxr14, covidx-ct, msd)")
    p.add_argument("root", help="the dataset folder")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--split", default=None, help="only this split (train/val/test...)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, repeatable (e.g. level=series, uncertainty=u-ones)")
    p.add_argument("--preset", choices=["auto", "ct", "cxr", "series", "none"], default="auto",
                   help="preprocessing preset (auto: ct for volumes, series for covidx-ct level=series, else cxr)")
    p.add_argument("--size", type=int, default=224, help="2-D image / slice size (cxr and series presets)")
    p.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5], help="CT voxel size in mm")
    p.add_argument("--patch", type=int, nargs=3, default=[96, 96, 96], help="CT crop-or-pad size")
    p.add_argument("--hu-window", type=float, nargs=2, default=[-1000.0, 400.0], help="CT HU window")
    p.add_argument("--dtype", choices=["float32", "uint8"], default="float32", help="stored image dtype")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache of other inputs")
    p.set_defaults(func=run)
    return p


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out


def preset_for(kind: str, preset: str, options: dict[str, Any], args: argparse.Namespace) -> tuple[Any, Any]:
    """The (transform, slice_size) used for ``kind`` under ``--preset``."""
    from medzoo.data.transforms import ct_preset, cxr_preset, series_preset

    if preset == "auto":
        if kind in _VOLUME_KINDS:
            preset = "ct"
        elif kind == "covidx-ct" and options.get("level") == "series":
            preset = "series"
        else:
            preset = "cxr"
    size = (args.size, args.size)
    if preset == "ct":
        return ct_preset(False, hu_window=tuple(args.hu_window), spacing=tuple(args.spacing),
                         patch=tuple(args.patch)), None
    if preset == "series":
        return series_preset(False), size
    if preset == "cxr":
        return cxr_preset(False, size=size), None
    return None, None


def run(args: argparse.Namespace) -> int:
    """Open the dataset, prepare the cache, print a one-line table."""
    from medzoo.data import open_dataset  # lazy: the readers are only needed here
    from medzoo.data.prepared import prepare

    options = _options(args.option)
    if args.split is not None:
        options["split"] = args.split
    manifest = open_dataset(args.kind, args.root, **options)
    transform, slice_size = preset_for(args.kind, args.preset, options, args)
    progress = not getattr(args, "quiet", False) and sys.stderr.isatty()
    out = prepare(manifest, args.out, transform=transform, slice_size=slice_size, dtype=args.dtype,
                  workers=args.workers, overwrite=args.overwrite, progress=progress)
    n_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{'kind':<14} {'samples':>8} {'MiB':>9}  out")
    print(f"{args.kind:<14} {len(manifest):>8} {n_bytes / 2**20:>9.1f}  {out}")
    return 0
