"""Typed value checks for specs and contracts: each names the entry and key of the first problem."""

from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """A catalog entry or spec dict is invalid; the message names the entry and the key."""


class _Ctx:
    """Carries ``where`` (the entry) and a key path for error messages."""

    def __init__(self, where: str, path: str = "") -> None:
        self.where, self.path = where, path

    def sub(self, key: str | int) -> _Ctx:
        step = f"[{key}]" if isinstance(key, int) else (f".{key}" if self.path else str(key))
        return _Ctx(self.where, self.path + step)

    def fail(self, msg: str) -> SpecError:
        return SpecError(f"{self.where}: key {self.path or '<root>'!r}: {msg}")


def _mapping(d: Any, ctx: _Ctx, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ctx.fail(f"expected a mapping, got {type(d).__name__} {d!r}")
    unknown = sorted(set(map(str, d)) - allowed)
    if unknown:
        raise ctx.fail(f"unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")
    missing = sorted(required - set(d))
    if missing:
        raise ctx.fail(f"missing required key(s) {missing}")
    return d


def _str(v: Any, ctx: _Ctx, *, choices: tuple[str, ...] | None = None, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v.strip():
        raise ctx.fail(f"expected a non-empty string (quote numbers, e.g. \"1.0\"), got {v!r}")
    if choices is not None and v not in choices:
        raise ctx.fail(f"expected one of {list(choices)}, got {v!r}")
    return v


def _int(v: Any, ctx: _Ctx, *, minimum: int = 0, optional: bool = False) -> int | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ctx.fail(f"expected an integer >= {minimum}, got {v!r}")
    return v


def _bool(v: Any, ctx: _Ctx) -> bool | None:
    if v is not None and not isinstance(v, bool):
        raise ctx.fail(f"expected true, false or null, got {v!r}")
    return v


def _num(v: Any, ctx: _Ctx) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ctx.fail(f"expected a number, got {v!r}")
    return float(v)


def _seq(v: Any, ctx: _Ctx, item: Any, *, length: int | None = None, optional: bool = False) -> tuple | None:
    if v is None and optional:
        return None
    if not isinstance(v, (list, tuple)):
        raise ctx.fail(f"expected a list, got {v!r}")
    if length is not None and len(v) != length:
        raise ctx.fail(f"expected a list of {length} items, got {len(v)}: {v!r}")
    return tuple(item(x, ctx.sub(i)) for i, x in enumerate(v))


def _mean_std(d: dict, norm: str, ctx: _Ctx) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``mean``/``std`` of a ``meanstd`` contract: equal lengths, std > 0; other normalisations take neither."""
    mean = _seq(d.get("mean"), ctx.sub("mean"), _num, optional=True)
    std = _seq(d.get("std"), ctx.sub("std"), _num, optional=True)
    if norm != "meanstd":
        if mean is not None or std is not None:
            raise ctx.sub("mean" if mean is not None else "std").fail(f"only normalisation 'meanstd' takes mean/std, "
                                                                      f"this one is {norm!r}")
        return None, None
    if not mean or not std or len(mean) != len(std) or min(std) <= 0:
        raise ctx.sub("std").fail(f"normalisation 'meanstd' needs mean and std lists of equal length with std > 0, "
                                  f"got mean={mean}, std={std}")
    return mean, std


def _plain(v: Any) -> Any:
    """Tuples -> lists, recursively (YAML/JSON-ready)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
