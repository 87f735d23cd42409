"""``medzoo experiment``: run a transfer-learning matrix (task x init or baseline x data fraction x seed), resumably.

Finished cells (``<out>/cells/<cell>/result.json``) are skipped on a re-run; ``results.csv``, ``results.md`` (with
paired differences against the reference init and their 95% t intervals) and the plots are rewritten from all cells.
Every cell runs on one torch thread, cells run side by side in ``--workers`` processes: the numbers do not depend on
either.

Example:
    medzoo experiment configs/transfer/lung_seg.yaml --set seeds=[0,1,2,3,4] --out runs/transfer

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run_experiment_cmd"]


def add_parser(subparsers: Any) -> None:
    """Add the ``experiment`` subcommand."""
    p = subparsers.add_parser("experiment", help="run a resumable init x fraction x seed matrix",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="experiment YAML (configs/transfer/lung_seg.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override of the experiment config, e.g. seeds=[0,1] (repeatable)")
    p.add_argument("--out", default=None, help="experiment folder (default: the config's output)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--workers", type=int, default=None,
                   help="single-thread worker processes (default: the usable cores); the numbers do not change")
    p.set_defaults(func=run_experiment_cmd)


def run_experiment_cmd(args: argparse.Namespace) -> int:
    """Run the matrix and print the table."""
    from medzoo.experiment.report import paired_table
    from medzoo.experiment.runner import run_experiment

    progress = False if getattr(args, "quiet", False) else None
    res = run_experiment(args.config, args.overrides, output=args.out, progress=progress, plots=not args.no_plots,
                         workers=args.workers)
    print(res.table)
    print()
    for task in dict.fromkeys(p["task"] for p in res.paired):
        print(paired_table(res.paired, task))
        print()
    for claim in res.claims if res.paired else []:
        print(f"- {claim}")
    print(f"{len(res.ran)} cell(s) run, {len(res.skipped)} reused; results in {res.output}")
    for key, path in res.files.items():
        print(f"{key:<20} {path}")
    return 0
