"""medzoo benchmarks: ``python tools/bench.py SUITE [--quick] [--write]``.

Each suite prints a table of ratios measured side by side in one run; ``--write`` records it, with the machine
description, in docs/BENCHMARKS.md (other suites' sections are kept).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python tools/bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from tools.benchlib import format_table, machine_description, write_benchmarks_md  # noqa: E402

# suite -> (module, function)
SUITES = {
    "encoder": ("tools.bench_encoder", "bench_encoder"),
}
COLUMNS = ["name", "ratio", "target"]


def run_suite(name: str, quick: bool) -> list[dict]:
    module, fn = SUITES[name]
    return getattr(importlib.import_module(module), fn)(quick=quick)


def section(name: str, rows: list[dict], quick: bool) -> str:
    machine = machine_description()
    extra = [c for c in rows[0] if c not in COLUMNS + ["suite"]]
    lines = [f"## {name}{' (quick)' if quick else ''}", "",
             "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()), "",
             format_table(rows, COLUMNS + extra), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats / smaller inputs")
    parser.add_argument("--write", action="store_true", help="record the results in docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    for name in SUITES if args.suite == "all" else [args.suite]:
        rows = run_suite(name, args.quick)
        text = section(name, rows, args.quick)
        print(text)
        if args.write:
            write_benchmarks_md(ROOT / "docs" / "BENCHMARKS.md", name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
