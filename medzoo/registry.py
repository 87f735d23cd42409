"""One small registry for every pluggable part (encoders, heads, aggregators, dataset readers, ...).

Builders are registered by name; a duplicate name raises, and an unknown name raises with the valid options
and the closest matches.

Example:
    >>> from medzoo.registry import Registry
    >>> HEADS = Registry("head")
    >>> @HEADS.register("linear")
    ... def build_linear(in_features, out_features):
    ...     return (in_features, out_features)
    >>> HEADS.get("linear")(4, 2)
    (4, 2)
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["Registry"]

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
    """A name -> builder mapping for one kind of component.

    Args:
        kind: what the registry holds, used in error messages (for example ``"encoder"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator that registers a builder under ``name`` (default: the function's ``__name__``)."""

        def deco(fn: T) -> T:
            key = name or fn.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered (by {self._items[key]!r})")
            self._items[key] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        """Return the builder for ``name``; an unknown name raises ``KeyError`` listing close and valid names."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(self._unknown_message(name)) from None

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self._items, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(self.list())}"

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern``."""
        return sorted((n for n in self._items if fnmatch.fnmatch(n, pattern)), key=_natural_sort_key)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"


def _natural_sort_key(name: str) -> list:
    """Sort ``resnet18`` before ``resnet101``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
