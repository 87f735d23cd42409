"""``medzoo bench SUITE [--quick] [--write]``: run the benchmark suites (see :mod:`medzoo.bench`).

The suites live in the repository's ``tools/`` folder, so this command runs them from a checkout (an editable
install); an installed package reports the suites it cannot find.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run_bench"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    from medzoo.bench import SUITES

    p = subparsers.add_parser("bench", help="run benchmark suites (ratios measured side by side)")
    p.add_argument("suite", choices=[*SUITES, "all"], help="a suite, or 'all' (missing suites are skipped)")
    p.add_argument("--quick", action="store_true", help="fewer repeats / smaller inputs (all: < 10 min on 2 cores)")
    p.add_argument("--write", action="store_true", help="record the tables in docs/BENCHMARKS.md")
    p.add_argument("--output", type=Path, default=None,
                   help="markdown file for --write (default: <checkout>/docs/BENCHMARKS.md)")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Run the suites named by ``args.suite``, print the tables, and record them with ``--write``."""
    from medzoo.bench import default_output, run_benchmarks

    output = (args.output or default_output()) if args.write else None
    run_benchmarks([args.suite], quick=args.quick, output=output, emit=print)
    return 0
