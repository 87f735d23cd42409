"""``medzoo synth --out DIR``: write the synthetic corpus (public on-disk formats, learnable signal).

Example:
    medzoo synth --out data/synth
    medzoo synth --out /tmp/tiny --size tiny --seed 3

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand."""
    p = subparsers.add_parser("synth", help="write the synthetic corpus in the public datasets' formats",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write the corpus into")
    p.add_argument("--seed", type=int, default=0, help="base seed (same seed -> byte-identical files)")
    p.add_argument("--size", choices=["small", "tiny"], default="small", help="corpus size")
    p.add_argument("--no-dicom", action="store_true", help="skip the DICOM series")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the corpus and print what went where."""
    from medzoo.data.synth import write_synthetic_corpus

    paths = write_synthetic_corpus(args.out, seed=args.seed, size=args.size, dicom=not args.no_dicom)
    out = Path(args.out)
    print(f"{'dataset':<26} {'files':>6}  path")
    for name, path in sorted(paths.items()):
        n = sum(1 for f in path.rglob("*") if f.is_file()) if path.is_dir() else 1
        print(f"{name:<26} {n:>6}  {path.relative_to(out) if path != out else '.'}")
    return 0
