"""medzoo benchmarks: ``python tools/bench.py SUITE|all [--quick] [--write] [--output PATH]``.

Each suite prints a table of ratios measured side by side in one run; ``--write`` records it, with the machine
description, in docs/BENCHMARKS.md (other suites' sections are kept, and the summary of every target and of the
targets not met is refreshed). ``all`` runs every suite and skips, with a message, those whose module is missing.

Suites are named in :data:`SUITES` as ``name -> (module, function)``; ``function(quick=...)`` returns a list of row
dicts (see :mod:`tools.benchlib` for the row format). Benchmarks belong to the repository, not to the installed
package: they compare medzoo with other ways of doing the same work on the machine at hand.

Example:
    >>> from tools.bench import SUITES
    >>> "overhead" in SUITES and "roofline" in SUITES
    True
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python tools/bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from tools.benchlib import format_table, machine_description, row_targets, write_benchmarks_md  # noqa: E402

__all__ = ["DEFAULT_OUTPUT", "SUITES", "SuiteMissing", "load_suite", "main", "run_benchmarks", "section"]

logger = logging.getLogger(__name__)

#: suite -> (module, function); ``all`` runs them in this order.
SUITES: dict[str, tuple[str, str]] = {
    "overhead": ("tools.bench_overhead", "bench_overhead"),
    "encoder": ("tools.bench_encoder", "bench_encoder"),
    "series": ("tools.bench_series", "bench_series"),
    "data": ("tools.bench_data", "bench_data"),
    "predict": ("tools.bench_predict", "bench_predict"),
    "predict-batch": ("tools.bench_predict_batch", "bench_predict_batch"),
    "roofline": ("tools.bench_roofline", "bench_roofline"),
    "train": ("tools.bench_train", "bench_train"),
}
COLUMNS = ["name", "ratio", "target"]
DEFAULT_OUTPUT = ROOT / "docs" / "BENCHMARKS.md"


class SuiteMissing(RuntimeError):
    """A suite's module is not available (not a checkout, or the suite is not written yet)."""


def load_suite(name: str, suites: dict[str, tuple[str, str]] | None = None) -> Callable[..., list[dict]]:
    """The suite function of ``name``, importing its module lazily.

    Raises:
        KeyError: an unknown suite name (the message lists the known ones).
        SuiteMissing: the suite's module cannot be found.
    """
    suites = SUITES if suites is None else suites
    if name not in suites:
        raise KeyError(f"unknown benchmark suite {name!r}; suites: {sorted(suites)} or 'all'")
    module, fn = suites[name]
    try:
        mod = importlib.import_module(module)  # a suite's own imports (torch, MONAI...) load only when it runs
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise SuiteMissing(f"suite {name!r}: module {module} not found in {ROOT / 'tools'}") from exc
        raise
    if not hasattr(mod, fn):
        raise SuiteMissing(f"suite {name!r}: module {module} has no function {fn}()")
    return getattr(mod, fn)


def _groups(rows: list[dict]) -> list[list[dict]]:
    """Consecutive rows with the same keys, so that each table has only the columns its rows fill."""
    groups: list[list[dict]] = []
    for r in rows:
        if groups and set(groups[-1][0]) == set(r):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def section(name: str, rows: list[dict], quick: bool, machine: dict[str, str] | None = None) -> str:
    """The markdown section of one suite: the machine line, then one table (name, ratio, target first) per group
    of rows that share their keys."""
    machine = machine_description() if machine is None else machine
    lines = [f"## {name}{' (quick)' if quick else ''}", "",
             "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()), ""]
    for group in _groups(rows):
        extra = [k for k in group[0] if k not in COLUMNS + ["suite"]]
        lines += [format_table(group, COLUMNS + extra), ""]
    if not rows:
        lines += ["(no rows)", ""]
    return "\n".join(lines)


def run_benchmarks(names: Iterable[str], *, quick: bool = False, output: Path | None = None,
                   emit: Callable[[str], Any] = logger.info,
                   suites: dict[str, tuple[str, str]] | None = None) -> dict[str, list[dict]]:
    """Run suites, emit each table, and record them in ``output`` (BENCHMARKS.md) when given.

    Args:
        names: suite names, or ``["all"]`` for every suite (missing ones are skipped with a message).
        quick: fewer repeats / smaller inputs (``all --quick`` stays under 10 minutes on 2 cores).
        output: the BENCHMARKS.md to update (``None``: print only).
        emit: where tables and messages go (the CLI passes ``print``).
        suites: the suite table (default :data:`SUITES`; tests pass their own).

    Returns:
        ``{suite: rows}`` of the suites that ran.
    """
    suites = SUITES if suites is None else suites
    names = list(names)
    run_all = names == ["all"]
    results = {}
    for name in (list(suites) if run_all else names):
        try:
            fn = load_suite(name, suites)
        except SuiteMissing as exc:
            if not run_all:
                raise
            emit(f"skipping {exc}")
            continue
        rows = fn(quick=quick)
        results[name] = rows
        text = section(name, rows, quick)
        emit(text)
        if output is not None:
            targets = [t for r in rows for t in row_targets(name, r)]
            write_benchmarks_md(Path(output), name, text, targets)
            emit(f"recorded suite {name!r} in {output}")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the suites named on the command line; returns the exit code (2 for a missing suite)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats / smaller inputs (all: < 10 min, 2 cores)")
    parser.add_argument("--write", action="store_true", help="record the results in docs/BENCHMARKS.md")
    parser.add_argument("--output", type=Path, default=None, help="the markdown file for --write")
    args = parser.parse_args(argv)
    output = (args.output or DEFAULT_OUTPUT) if args.write else None
    try:
        run_benchmarks([args.suite], quick=args.quick, output=output, emit=print)
    except SuiteMissing as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
