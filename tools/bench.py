"""medzoo benchmarks: ``python tools/bench.py SUITE|all [--quick] [--write] [--output PATH]``.

Each suite prints a table of ratios measured side by side in one run; ``--write`` records it, with the machine
description, in docs/BENCHMARKS.md (other suites' sections are kept, and the summary of every target and of the
targets not met is refreshed). ``all`` runs every suite and skips, with a message, those whose module is missing.
The driver is :mod:`medzoo.bench` (also ``medzoo bench``); this file is a thin wrapper for checkouts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python tools/bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from medzoo.bench import SUITES, SuiteMissing, default_output, run_benchmarks  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats / smaller inputs")
    parser.add_argument("--write", action="store_true", help="record the results in docs/BENCHMARKS.md")
    parser.add_argument("--output", type=Path, default=None, help="the markdown file for --write")
    args = parser.parse_args(argv)
    output = (args.output or default_output()) if args.write else None
    try:
        run_benchmarks([args.suite], quick=args.quick, output=output, emit=print)
    except SuiteMissing as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
