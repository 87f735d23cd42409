"""LoadReport: what a weight load did, key by key.

Loading never calls a bare ``strict=False``: every key of the file and of the model ends up in exactly one list,
and the report is logged.

Example:
    >>> r = LoadReport(source="w.pth", loaded=["conv1.weight"], missing=["bn1.num_batches_tracked"])
    >>> r.ok
    False
    >>> print(r.summary())
    w.pth: loaded 1, adapted 0, ignored 0, missing 1, unexpected 0
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["LoadReport"]

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """The outcome of a weight load.

    Attributes:
        source: the file or catalog entry loaded.
        loaded: model keys filled from the file as they were.
        adapted: model key -> what was changed to make it fit (for example the stem for ``in_channels``), plus
            entries for whole-model adaptations such as a geometry (output_stride) change.
        ignored: file key -> why it was deliberately not used (for example a head the model does not have).
        missing: model keys the file did not provide (they keep their initial values).
        unexpected: file keys that match nothing in the model.
        inflation: how 2D kernels became 3D, when they did: ``"centre"`` (each 2D kernel is the centre depth slice,
            the other slices zero, so the 2D path computes the 2D network) or ``"mean"`` (I3D: the kernel divided by
            its depth and repeated over depth); ``None`` when nothing was inflated.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    inflation: str | None = None

    @property
    def ok(self) -> bool:
        """True when nothing was missing or unexpected."""
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        """One line of counts."""
        inflated = f", 2D kernels inflated to 3D ({self.inflation})" if self.inflation else ""
        return (f"{self.source}: loaded {len(self.loaded)}, adapted {len(self.adapted)}, ignored {len(self.ignored)}, "
                f"missing {len(self.missing)}, unexpected {len(self.unexpected)}{inflated}")

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += _adapted_lines(self.adapted)
        lines += [f"  ignored {k}: {v}" for k, v in _group(self.ignored).items()]
        lines += [f"  missing {k}" for k in self.missing]
        lines += [f"  unexpected {k}" for k in self.unexpected]
        return "\n".join(lines)

    def log(self, logger: logging.Logger | None = None) -> LoadReport:
        """Log the report (INFO when clean, WARNING when keys are missing or unexpected); returns self."""
        (logger or log).log(logging.INFO if self.ok else logging.WARNING, "%s", self)
        return self

    def to_dict(self) -> dict:
        """A JSON-friendly dict."""
        return {"source": self.source, "loaded": self.loaded, "adapted": self.adapted, "ignored": self.ignored,
                "missing": self.missing, "unexpected": self.unexpected, "inflation": self.inflation}


def _group(ignored: dict[str, str]) -> dict[str, str]:
    """Collapse ignored keys that share a reason and a first name component (``conv_seg.*``) into one line."""
    out: dict[str, str] = {}
    for key, why in ignored.items():
        group = key.split(".")[0] + ".*" if "." in key else key
        prev = out.get(group)
        out[group] = why if prev in (None, why) else f"{prev}; {why}"
    return out


def _adapted_lines(adapted: dict[str, str]) -> list[str]:
    """One line per adapted key; a reason shared by many keys (inflated kernels) becomes one line with a count."""
    by_reason: dict[str, list[str]] = {}
    for key, why in adapted.items():
        by_reason.setdefault(why, []).append(key)
    lines = []
    for why, keys in by_reason.items():
        if len(keys) > 3:
            lines.append(f"  adapted {len(keys)} keys ({keys[0]}, {keys[1]}, ..., {keys[-1]}): {why}")
        else:
            lines += [f"  adapted {k}: {why}" for k in keys]
    return lines
