"""What a resume may continue, and the run folder's text records: the config check of ``--resume``, strict JSON
lines for ``metrics.jsonl``, and trimming the lines a killed run wrote after its last checkpoint.

A resumed run continues exactly only under the config that trained its first steps: other labels flip what a head
means, another split moves patients between training and test, another learning rate or schedule changes the
optimisation. :func:`config_differences` lists every difference key by key; :func:`check_resume` refuses them
unless forced. Keys that only say *how* the run executes (workers, device, logging) may change.

Example:
    >>> config_differences({"train": {"lr": 0.1, "seed": 0}}, {"train": {"lr": 0.5, "seed": 0}})
    ['train.lr: 0.1 -> 0.5']
    >>> strict_json_line({"loss": float("nan"), "step": 2})
    '{"loss": null, "step": 2}'
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medzoo.config import ConfigError

__all__ = ["EXECUTION_KEYS", "check_resume", "config_differences", "finite_or_none", "prepare_run_dir",
           "strict_json_line", "trim_metrics"]

log = logging.getLogger(__name__)

#: Keys that may differ on resume: they change how the run executes or how often it looks, not the weights it
#: computes (``eval_every``: evaluation touches neither weights nor RNG; the experiment runner sets it per run).
EXECUTION_KEYS = frozenset({
    "train.device", "train.num_workers", "train.pin_memory", "train.persistent_workers", "train.prefetch_factor",
    "train.compile", "train.channels_last", "train.deterministic", "train.max_minutes", "train.eval_every",
    "output.tensorboard", "output.log_images", "output.checkpoint_every", "output.last_every_epoch",
})


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list) and any(isinstance(v, (Mapping, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any],
                       ignore: frozenset[str] = frozenset()) -> list[str]:
    """``"key: old -> new"`` for every dotted key (``data[0].split.seed``) whose value differs, sorted by key.

    A key present on one side only shows ``(absent)`` on the other.
    """
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or a.get(key, ...) == b.get(key, ...):
            continue
        out.append(f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}".replace("'(absent)'",
                                                                                             "(absent)"))
    return out


def check_resume(stored_yaml: str, current: Mapping[str, Any], checkpoint: Path, force: bool) -> list[str]:
    """Compare a checkpoint's config with the current one; returns the differences.

    Raises:
        ConfigError: the configs differ in a key outside :data:`EXECUTION_KEYS` and ``force`` is false; the message
            names the checkpoint and lists every difference.
    """
    diffs = config_differences(yaml.safe_load(stored_yaml) or {}, current, EXECUTION_KEYS)
    if diffs and not force:
        raise ConfigError(f"{checkpoint}: the run config differs from the one this checkpoint was trained with, so "
                          f"a resume would not continue the same run: {'; '.join(diffs)}. Restore those settings, "
                          "start a new run (another output.dir), or resume anyway with --force")
    for d in diffs:
        log.warning("resuming with --force under a changed config: %s", d)
    return diffs


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by None, recursively."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # float, numpy floats
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def strict_json_line(record: Mapping[str, Any]) -> str:
    """One line of strict JSON (RFC 8259 has no NaN: an undefined metric is ``null``)."""
    return json.dumps(finite_or_none(dict(record)), allow_nan=False, default=float)


def trim_metrics(path: Path, step: int) -> int:
    """Drop the lines of ``metrics.jsonl`` after optimizer step ``step`` (a killed run wrote them after its last
    checkpoint; the resumed run writes them again). Returns the number of lines dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = []
    for line in lines:
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                keep.append(line)
        except (ValueError, AttributeError):
            continue  # a line cut by the kill
    if len(keep) != len(lines):
        path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    return len(lines) - len(keep)


def prepare_run_dir(run_dir: Path, config_text: str, resumed_step: int | None) -> None:
    """Write ``config.yaml`` and start ``metrics.jsonl`` afresh, or, on resume (``resumed_step``), drop its lines
    past the checkpoint. A changed ``config.yaml`` is kept as ``config.before-step<N>.yaml``, never overwritten
    silently."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config, metrics = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    if resumed_step is None:
        if (run_dir / "last.pt").is_file():
            log.warning("%s already holds a run (last.pt): starting a new run over it (--resume continues it)",
                        run_dir)
        metrics.unlink(missing_ok=True)
    else:
        dropped = trim_metrics(metrics, resumed_step)
        if dropped:
            log.info("%s: dropped %d line(s) written after the checkpoint", metrics, dropped)
        if config.is_file() and config.read_text(encoding="utf-8") != config_text:
            kept = config.with_name(f"config.before-step{resumed_step}.yaml")
            os.replace(config, kept)
            log.warning("the config changed on resume: the previous one is kept as %s", kept)
    config.write_text(config_text, encoding="utf-8")
