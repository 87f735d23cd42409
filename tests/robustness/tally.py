"""Per-case tallies of the robustness suite: what was tried and what held.

Each test wraps one case (one hypothesis example, one file, one fault) in :func:`case`. Entering counts the case as
tried; leaving the block without an exception counts it as held. ``tools/reliability_report.py`` reads
:data:`COUNTS` after a run and writes docs/RELIABILITY.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["COUNTS", "NOTES", "OUTCOMES", "case", "note", "outcome", "reset"]

#: (category, what) -> [tried, held]
COUNTS: dict[tuple[str, str], list[int]] = {}
#: (category, what) -> notes (how the case is handled, bugs found)
NOTES: dict[tuple[str, str], str] = {}
#: (category, what) -> outcome label -> count (for example how many mutated listings read vs raised)
OUTCOMES: dict[tuple[str, str], dict[str, int]] = {}


@contextmanager
def case(category: str, what: str) -> Iterator[None]:
    """Count one case of ``category`` / ``what``; it held when the block finishes without raising."""
    counts = COUNTS.setdefault((category, what), [0, 0])
    counts[0] += 1
    yield
    counts[1] += 1


def note(category: str, what: str, text: str) -> None:
    """Attach a note to a table row (for example which bug the row's regression test covers)."""
    NOTES[(category, what)] = text


def outcome(category: str, what: str, label: str) -> None:
    """Count how a case ended (reported in the notes column)."""
    row = OUTCOMES.setdefault((category, what), {})
    row[label] = row.get(label, 0) + 1


def reset() -> None:
    """Forget all counts (the report tool calls this before its run)."""
    COUNTS.clear()
    NOTES.clear()
    OUTCOMES.clear()
