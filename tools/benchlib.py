"""Shared benchmark helpers, kept importable as ``tools.benchlib`` for the suites.

The code lives in :mod:`medzoo.bench.lib` (so that ``medzoo bench`` works too); see there.
"""

from __future__ import annotations

from medzoo.bench.lib import (  # noqa: F401
    format_table,
    interleaved,
    machine_description,
    read_section_targets,
    row_targets,
    write_benchmarks_md,
)

__all__ = ["interleaved", "machine_description", "write_benchmarks_md", "format_table", "row_targets",
           "read_section_targets"]
