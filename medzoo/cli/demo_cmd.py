"""``medzoo demo``: the first command to run; pretrain, publish to a local zoo, fine-tune, and print the tables.

Example:
    medzoo demo                      # full demo in ./medzoo-demo (5 seeds, 3 fractions)
    medzoo demo --quick              # 3 seeds, 2 fractions, shorter pretraining
    medzoo demo --out /tmp/demo --seeds 8 --workers 4

The tables are the same whatever the thread or worker count (every job runs on one torch thread; jobs run side by
side in worker processes). The README lists the measured wall times; a line per finished job shows progress.

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run_demo_cmd"]


def add_parser(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser("demo", help="pretrain, publish to a local zoo, fine-tune and compare (offline)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="demo folder (default: medzoo-demo, or medzoo-demo-quick)")
    p.add_argument("--quick", action="store_true", help="the short version (3 seeds, 2 fractions)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: 5, or 3 with --quick)")
    p.add_argument("--workers", type=int, default=None,
                   help="single-thread worker processes (default: the usable cores); the numbers do not change")
    p.add_argument("--profile", default=None, choices=["full", "quick", "tiny"], help=argparse.SUPPRESS)
    p.set_defaults(func=run_demo_cmd)


def run_demo_cmd(args: argparse.Namespace) -> int:
    """Run the demo and print the tables and the generated sentences; re-running reuses finished steps."""
    import logging

    from medzoo.experiment.demo import run_demo

    if not getattr(args, "verbose", 0):
        # Each fine-tuning run loads the encoder only, so its report lists every fresh head key as missing.
        logging.getLogger("medzoo.zoo.report").setLevel(logging.ERROR)
    profile = args.profile or ("quick" if args.quick else "full")
    out = args.out or ("medzoo-demo" if profile == "full" else f"medzoo-demo-{profile}")
    progress = False if getattr(args, "quiet", False) else None
    res = run_demo(out, profile, seeds=args.seeds, progress=progress, workers=args.workers)
    print(res.table)
    print()
    print(res.paired_table)
    print()
    for claim in res.claims:
        print(f"- {claim}")
    print()
    print(f"zoo entry {res.zoo['name']} (sha256 {res.zoo['sha256'][:12]}...) in {res.zoo['catalog']}")
    print(f"report: {res.report}")
    for path in res.plots:
        print(f"plot:   {path}")
    print(f"total {res.seconds['total, wall']:.0f} s wall, {res.seconds['all processes, CPU']:.0f} CPU-seconds")
    return 0
