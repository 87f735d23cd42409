"""The one table renderer: plain text for terminals, GitHub markdown for reports and docs.

Callers build rows of cells; numbers are formatted here with a fixed number of digits (``nan`` for a missing or
non-finite value), so every table in the CLI, the reports and the benchmarks reads the same way.

Example:
    >>> print(render(["task", "auroc"], [["tb", 0.91234], ["covid", float("nan")]], digits=3))
    task   auroc
    -----  -----
    tb     0.912
    covid    nan
    >>> print(render(["task", "auroc"], [["tb", 0.91234]], style="markdown", digits=3))
    | task | auroc |
    |---|---:|
    | tb | 0.912 |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_cell", "render", "render_records"]

STYLES = ("text", "markdown")


def format_cell(value: Any, digits: int = 4) -> str:
    """One cell as text: floats with ``digits`` decimals (``nan`` if not finite), ``-`` for ``None``.

    Example:
        >>> format_cell(0.5), format_cell(None), format_cell(float("inf")), format_cell(3)
        ('0.5000', '-', 'nan', '3')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "nan"
    return str(value)


def _is_numeric(column: Sequence[Any]) -> bool:
    values = [v for v in column if v is not None]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def render(header: Sequence[str], rows: Sequence[Sequence[Any]], *, style: str = "text", digits: int = 4,
           title: str | None = None) -> str:
    """Render ``rows`` under ``header``; numeric columns are right-aligned.

    Args:
        header: column names.
        rows: one sequence of cells per row, each as long as ``header``.
        style: ``text`` (space-aligned, for terminals) or ``markdown`` (a GitHub table).
        digits: decimals for float cells.
        title: optional line printed above the table.

    Raises:
        ValueError: for an unknown style, or a row whose length differs from the header's.
    """
    if style not in STYLES:
        raise ValueError(f"unknown table style {style!r}; expected one of {STYLES}")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table row {i} has {len(row)} cells, expected {len(header)} ({list(header)})")
    numeric = [_is_numeric([r[c] for r in rows]) for c in range(len(header))]
    cells = [[format_cell(v, digits) for v in row] for row in rows]
    lines = [title] if title else []
    if style == "markdown":
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "".join("---:|" if n else "---|" for n in numeric))
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *cells)]

    def line(row: Sequence[str]) -> str:
        parts = [x.rjust(w) if n else x.ljust(w) for x, w, n in zip(row, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines += [line(header), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in cells]
    return "\n".join(lines)


def render_records(records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, **kwargs: Any) -> str:
    """:func:`render` for rows given as dicts: ``columns`` (default: every key, in first-seen order) become the
    header, and a missing cell is ``None`` (shown as ``-``).

    Example:
        >>> print(render_records([{"k": "a", "v": 1.5}, {"k": "b"}], style="markdown", digits=1))
        | k | v |
        |---|---:|
        | a | 1.5 |
        | b | - |
    """
    cols = list(columns) if columns else list(dict.fromkeys(k for r in records for k in r))
    return render(cols, [[r.get(c) for c in cols] for r in records], **kwargs)

