"""Strict JSON: what ``json.dumps`` writes by default (bare ``NaN``, ``Infinity``) is not JSON, and strict parsers
(browsers, ``jq``, most languages) reject the whole file.

Example:
    >>> dumps_strict({"auc": float("nan"), "n": 3})
    '{"auc": null, "n": 3, "nonfinite": ["$.auc"]}'
    >>> dumps_strict([1.0, float("inf")], flag=None)
    Traceback (most recent call last):
    ...
    ValueError: non-finite number at $[1] (inf); JSON cannot hold it
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps_strict", "nonfinite_paths"]


def _clean(obj: Any, path: str, found: list[tuple[str, float]]) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v, f"{path}.{k}", found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        found.append((path, obj))
        return None
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():  # numpy / torch scalar
        return _clean(obj.item(), path, found)
    return obj


def nonfinite_paths(obj: Any) -> list[str]:
    """JSON paths (``$.a[0].b``) of every NaN or infinite float in ``obj``."""
    found: list[tuple[str, float]] = []
    _clean(obj, "$", found)
    return [p for p, _ in found]


def dumps_strict(obj: Any, *, flag: str | None = "nonfinite", **kwargs: Any) -> str:
    """``json.dumps(obj, allow_nan=False, **kwargs)``, with every NaN or infinity made explicit.

    Args:
        obj: plain data (dicts, lists, str, numbers, None; numpy and torch scalars are converted).
        flag: non-finite values become ``null`` and a top-level mapping gains ``flag: [their paths]``; with
            ``None`` (or a top level that is not a mapping) a non-finite value is an error instead.
        **kwargs: passed to :func:`json.dumps` (``indent``, ``sort_keys``).

    Raises:
        ValueError: a non-finite value where no flag can be written, naming its path.
    """
    found: list[tuple[str, float]] = []
    clean = _clean(obj, "$", found)
    if found:
        if flag is None or not isinstance(clean, dict):
            path, value = found[0]
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise ValueError(f"non-finite number at {path} ({value}){more}; JSON cannot hold it")
        clean[flag] = [p for p, _ in found]
    return json.dumps(clean, allow_nan=False, **kwargs)
