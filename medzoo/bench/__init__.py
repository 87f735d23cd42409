"""The benchmark driver behind ``python tools/bench.py`` and ``medzoo bench``.

Suites are named in :data:`SUITES` as ``name -> (module, function)``; ``function(quick=...)`` returns a list of row
dicts (see :mod:`medzoo.bench.lib` for the row format). The suite modules live in the repository's ``tools/``
folder, which is not installed with medzoo: they are imported only when a suite runs, from the checkout that holds
this package (``<checkout>/tools``). A suite whose module is missing is skipped with a message by ``all`` and is an
error when asked for by name.

Example:
    >>> from medzoo.bench import SUITES
    >>> "overhead" in SUITES and "roofline" in SUITES
    True
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from medzoo.bench.lib import format_table, machine_description, row_targets, write_benchmarks_md

__all__ = ["SUITES", "SuiteMissing", "checkout_root", "load_suite", "run_benchmarks", "section", "default_output"]

logger = logging.getLogger(__name__)

#: suite -> (module, function); ``all`` runs them in this order.
SUITES: dict[str, tuple[str, str]] = {
    "overhead": ("tools.bench_overhead", "bench_overhead"),
    "encoder": ("tools.bench_encoder", "bench_encoder"),
    "series": ("tools.bench_series", "bench_series"),
    "data": ("tools.bench_data", "bench_data"),
    "predict": ("tools.bench_predict", "bench_predict"),
    "roofline": ("tools.bench_roofline", "bench_roofline"),
}
COLUMNS = ["name", "ratio", "target"]


class SuiteMissing(RuntimeError):
    """A suite's module is not available (not a checkout, or the suite is not written yet)."""


def checkout_root() -> Path | None:
    """The repository checkout that holds this package (it has ``tools/bench.py``), or ``None`` when installed."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "tools" / "bench.py").is_file() else None


def default_output() -> Path:
    """``<checkout>/docs/BENCHMARKS.md``, or ``./BENCHMARKS.md`` outside a checkout."""
    root = checkout_root()
    return root / "docs" / "BENCHMARKS.md" if root else Path("BENCHMARKS.md")


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
    root = checkout_root()
    if module.startswith("tools.") and root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            where = f"{root / 'tools'}" if root else "a medzoo checkout (tools/ is not installed)"
            raise SuiteMissing(f"suite {name!r}: module {module} not found in {where}") from exc
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
