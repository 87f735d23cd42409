"""Stage metadata in the shape timm users know: ``encoder.feature_info`` and ``out_indices``.

Every medzoo encoder has five stages (``stem, layer1 .. layer4`` for ResNets). ``feature_info`` describes all of
them, one dict per stage with ``num_chs`` (channels), ``reduction`` (in-plane stride relative to the input) and
``module`` (the name of the submodule whose output *is* that map, so a forward hook on it sees exactly the map the
encoder returns, on volumes and images alike). ``out_indices`` selects which stages the encoder returns, as timm's
``features_only`` models do; methods called without ``idx`` answer for the selected stages, with an ``idx`` for
those stage indices whatever the selection.

Example:
    >>> info = FeatureInfo([{"num_chs": c, "reduction": r, "module": m} for c, r, m in
    ...                     [(8, 2, "act"), (8, 4, "layer1"), (16, 8, "layer2")]], out_indices=(1, 2))
    >>> info.channels(), info.reduction(), info.module_name(0)
    ([8, 16], [4, 8], 'act')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FeatureInfo", "resolve_out_indices", "stage_contract"]


def resolve_out_indices(out_indices: Sequence[int] | int | None, n_stages: int, who: str) -> tuple[int, ...]:
    """Normalise ``out_indices`` to increasing stage indices in ``[0, n_stages)``.

    Args:
        out_indices: stage indices (negative ones count from the end), an int ``n`` for the last ``n`` stages (timm's
            convention), or None for every stage.
        n_stages: the encoder's number of stages.
        who: the encoder's name, for messages.

    Raises:
        ValueError: an index out of range, a repeated index, or an empty selection.
    """
    if out_indices is None:
        return tuple(range(n_stages))
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= n_stages:
            raise ValueError(f"{who}: out_indices={out_indices} as a count must be in 1..{n_stages}")
        return tuple(range(n_stages - out_indices, n_stages))
    picked = []
    for i in out_indices:
        if not isinstance(i, int) or isinstance(i, bool) or not -n_stages <= i < n_stages:
            raise ValueError(f"{who}: out_indices must be stage indices in [{-n_stages}, {n_stages - 1}], got "
                             f"{list(out_indices)}")
        picked.append(i % n_stages)
    if not picked or len(set(picked)) != len(picked):
        raise ValueError(f"{who}: out_indices must name each stage at most once and at least one, got "
                         f"{list(out_indices)}")
    return tuple(sorted(picked))


class FeatureInfo:
    """What each stage of an encoder returns: channels, reduction and the module that produces it.

    Args:
        info: one dict per stage (all stages, in order) with ``num_chs``, ``reduction`` and ``module``.
        out_indices: the stages the encoder returns.

    Indexing (``info[i]``) and ``len`` cover all stages; ``channels()``, ``reduction()``, ``module_name()`` and
    ``get_dicts()`` without ``idx`` cover the selected stages.
    """

    def __init__(self, info: Sequence[Mapping[str, Any]], out_indices: Sequence[int]) -> None:
        prev = 1
        for i, stage in enumerate(info):
            missing = {"num_chs", "reduction", "module"} - set(stage)
            if missing or stage["num_chs"] < 1 or stage["reduction"] < prev:
                raise ValueError(f"feature_info stage {i}: need num_chs >= 1, a non-decreasing reduction and a "
                                 f"module name, got {dict(stage)}")
            prev = stage["reduction"]
        self.info = [dict(stage) for stage in info]
        self.out_indices = tuple(resolve_out_indices(tuple(out_indices), len(self.info), "feature_info"))

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of the selected stages (``idx`` None), of one stage (an int) or of several (a sequence)."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The stage dicts (restricted to ``keys``), selected as in :meth:`get`."""
        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if isinstance(idx, int):
            return pick(idx)
        return [pick(i) for i in (self.out_indices if idx is None else idx)]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channel counts (``num_chs``)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """In-plane strides relative to the input."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Names of the submodules whose outputs are the maps (for forward hooks)."""
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return dict(self.info[item])

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info}, out_indices={self.out_indices})"


def stage_contract(channels: Sequence[int], strides: Sequence[int], modules: Sequence[str],
                   out_indices: Sequence[int] | int | None, who: str) -> tuple[FeatureInfo, tuple[int, ...]]:
    """``(feature_info, out_indices)`` of an encoder whose stages have these channels, strides and module names."""
    picked = resolve_out_indices(out_indices, len(channels), who)
    info = [{"num_chs": int(c), "reduction": int(s), "module": m} for c, s, m in zip(channels, strides, modules)]
    return FeatureInfo(info, picked), picked
