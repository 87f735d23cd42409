"""Typed configs: dataclasses <-> YAML, ``defaults:`` composition, dotted ``--set`` overrides, strict keys.

A config file is YAML whose keys match a dataclass schema. A top-level ``defaults:`` list names other YAML files
(relative to the including file), merged left to right, then the file itself on top. Overrides ``a.b=c`` are
applied last; their values are parsed as YAML scalars (``3`` -> int, ``[8, 16]`` -> list, ``null`` -> None).
Any unknown key is an error naming the full dotted key and the close matches; a missing required key is an
error naming it. No ``_target_``, no expressions, no code execution.

Example:
    >>> tasks = {"covid": {"type": "classification", "num_classes": 3, "level": "series"}}
    >>> cfg = load_config({"tasks": tasks, "aggregator": {"name": "mean"}}, overrides=["encoder.widths=[8,16,32,64]"])
    >>> cfg.encoder.widths, cfg.tasks["covid"].num_classes
    ((8, 16, 32, 64), 3)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from medzoo.config.yaml_io import (  # re-exported: users and medzoo import them from here
    BoundedLoader,
    ConfigError,
    load_yaml,
    read_text_file,
    safe_load_yaml,
)

__all__ = [
    "AggregatorConfig",
    "BoundedLoader",
    "ConfigError",
    "EncoderConfig",
    "NAME_PATTERN",
    "ModelConfig",
    "SeriesConfig",
    "TaskConfig",
    "apply_overrides",
    "check_name",
    "from_dict",
    "load_config",
    "load_yaml",
    "compose",
    "merge",
    "read_text_file",
    "safe_load_yaml",
    "save_config",
    "to_dict",
]

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def check_name(name: Any, key: str) -> str:
    """Return ``name`` if it is a valid task name, else raise a :class:`ConfigError` naming ``key``.

    A name starts with a letter or ``_`` and holds only letters, digits, ``_`` and ``-`` (at most 64 characters).

    Example:
        >>> check_name("covid_ct", "tasks.covid_ct")
        'covid_ct'
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{key}: {name!r} is not a valid name; expected a letter or '_' then letters, digits, "
                          "'_' or '-' (at most 64 characters), as it becomes a file name and a key in exported configs")
    return name


# ------------------------------------------------------------------------------------------------- model schema
@dataclass
class EncoderConfig:
    """Arguments of ``medzoo.encoders.create_encoder``; ``options`` holds any further keyword arguments."""

    name: str = "resnet18"
    in_channels: int = 1
    output_stride: int = 32
    widths: tuple[int, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskConfig:
    """One task: its head ``type``, the ``level`` it predicts at, and the head's arguments.

    ``num_classes``/``labels`` size classification, multilabel and segmentation heads; ``outputs`` names the
    regression outputs (``{name: [low, high]}`` for target scaling); ``thresholds`` are multilabel decision
    thresholds; ``decoder_channels`` sizes the U-Net decoder.
    """

    type: str
    level: str = "volume"
    num_classes: int | None = None
    labels: list[str] | None = None
    outputs: dict[str, list[float] | None] | list[str] | None = None
    thresholds: float | list[float] | dict[str, float] | None = None
    decoder_channels: list[int] | None = None
    dropout: float | None = None


@dataclass
class AggregatorConfig:
    """A registered aggregator ``name`` and its keyword arguments."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SeriesConfig:
    """Series encoding: items per encoder call, and activation checkpointing per chunk while training."""

    max_items_per_chunk: int = 64
    checkpoint: bool = False


@dataclass
class ModelConfig:
    """A whole model: ``create_model(ModelConfig)`` builds the ``MultiTaskModel``."""

    tasks: dict[str, TaskConfig]
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    aggregator: AggregatorConfig | None = None
    series: SeriesConfig = field(default_factory=SeriesConfig)

    def __post_init__(self) -> None:
        for name in self.tasks:
            check_name(name, f"tasks.{name}")


# ------------------------------------------------------------------------------------------------- typed conversion
def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check and convert ``value`` to the type hint ``tp``; errors name ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        options = [a for a in args if a is not type(None)]
        # Try the alternative whose container kind matches the value first, so its error is the one reported.
        options.sort(key=lambda a: not _same_kind(a, value))
        errors = []
        for arg in options:
            try:
                return _convert(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        if _same_kind(options[0], value) or len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {str(k): _convert(vt, v, _key(key, str(k))) for k, v in value.items()}
    return _scalar(tp, value, key)


def _same_kind(tp: Any, value: Any) -> bool:
    """Whether ``value`` is the container kind (mapping, list, scalar) that ``tp`` describes."""
    origin = typing.get_origin(tp)
    if origin in (dict, Mapping) or dataclasses.is_dataclass(tp):
        return isinstance(value, Mapping)
    if origin in (list, tuple, Sequence):
        return isinstance(value, (list, tuple))
    return not isinstance(value, (Mapping, list, tuple))


def _scalar(tp: Any, value: Any, key: str) -> Any:
    if value is None:
        raise ConfigError(f"{key}: must not be null (expected {_type_name(tp)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{key}: unsupported field type {tp!r} in the schema")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def from_dict(schema: type, data: Any, prefix: str = "") -> Any:
    """Build the dataclass ``schema`` from a plain mapping, checking keys and types.

    Raises:
        ConfigError: an unknown key (with close matches), a missing required key, or a wrong type; the message
            names the full dotted key.
    """
    if isinstance(data, schema):
        data = to_dict(data)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping for {schema.__name__}, got {data!r}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for name in data:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(repr(_key(prefix, c)) for c in close)}?" if close else ""
            raise ConfigError(f"unknown key {_key(prefix, str(name))!r}.{hint} Valid keys: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _key(prefix, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {_key(prefix, name)!r}")
    return schema(**kwargs)


def to_dict(cfg: Any) -> Any:
    """A dataclass config as plain dicts/lists/scalars (tuples become lists), ready for YAML."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


# ------------------------------------------------------------------------------------------------- bounded reading
def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else (lists, scalars) in ``top`` replaces ``base``."""
    out = copy.deepcopy(dict(base))
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def compose(path: str | Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load ``path`` with its ``defaults:`` list merged left to right underneath it (paths relative to it)."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"{path}: circular 'defaults' ({chain})")
    data = load_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a config file must hold a mapping at top level, got {type(data).__name__}")
    defaults = data.get("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"{path}: 'defaults' must be a list of file paths, got {defaults!r}")
    out: dict[str, Any] = {}
    for rel in defaults:
        target = path.parent / rel
        if not target.is_file():
            raise ConfigError(f"{path}: defaults entry {rel!r} not found (looked for {target})")
        out = merge(out, compose(target, (*_stack, path)))
    return merge(out, {k: v for k, v in data.items() if k != "defaults"})


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted ``a.b=c`` overrides; values are parsed as YAML (``3``, ``0.1``, ``[8, 16]``, ``null``)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted KEY, e.g. encoder.name=resnet10")
        try:
            value = safe_load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({err})") from err
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])!r} is not a mapping")
            node = node[part]
        node[parts[-1]] = value
    return out


def load_config(
    src: str | Path | Mapping[str, Any] | Any, overrides: Sequence[str] = (), schema: type = ModelConfig
) -> Any:
    """Load a typed config from a YAML path, a mapping or a dataclass instance, with ``--set`` overrides.

    Args:
        src: a YAML file (its ``defaults:`` are composed), a plain mapping, or a ``schema`` instance.
        overrides: dotted ``KEY=VALUE`` strings applied on top, in order.
        schema: the dataclass to build (``ModelConfig`` by default).

    Returns:
        A ``schema`` instance.

    Raises:
        ConfigError: unreadable or invalid YAML, an unknown or missing key, a wrong type; the message names the
            file and the dotted key.

    Example:
        >>> tasks = {"seg": {"type": "segmentation", "num_classes": 2}}
        >>> cfg = load_config({"tasks": tasks}, ["encoder.name=resnet10"])
        >>> cfg.encoder.name
        'resnet10'
    """
    where = ""
    if isinstance(src, (str, Path)):
        where = f"{src}: "
        data = compose(src)
    elif isinstance(src, Mapping):
        data = dict(src)
    elif dataclasses.is_dataclass(src) and not isinstance(src, type):
        data = to_dict(src)
    else:
        raise ConfigError(f"cannot load a config from {type(src).__name__}; give a YAML path, a mapping or {schema}")
    data = apply_overrides(data, overrides)
    try:
        return from_dict(schema, data)
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write a config (dataclass or mapping) as YAML; ``load_config(path)`` gives it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None), encoding="utf-8")
    return path
