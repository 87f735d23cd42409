"""``WeightsSpec``: the metadata that travels with a set of weights (one entry of ``weights/catalog.yaml``).

A spec holds the architecture contract the weights were trained with, which parts they cover, the tasks with
their label names and thresholds, the preprocessing contract, the files (urls, mirrors, sha256, size, format),
metrics, license and provenance. Loading applies the spec: head sizes come from ``tasks``, not from the caller.

``WeightsSpec.from_dict`` validates everything and names the entry and key of the first problem; unknown keys
are errors. ``to_dict`` gives back plain YAML/JSON-ready data, and ``from_dict(spec.to_dict()) == spec``.

Example:
    >>> spec = WeightsSpec.from_dict({
    ...     "name": "tiny.demo", "version": "1.0",
    ...     "architecture": {"encoder": "resnet10", "widths": [8, 16, 32, 64]},
    ...     "parts": ["encoder"],
    ...     "files": [{"url": "file:///tmp/tiny.safetensors", "sha256": None, "format": "safetensors"}],
    ...     "license": "MIT", "source": "https://example.org", "citation": "none",
    ... })
    >>> spec.architecture.output_stride, spec.files[0].pinned
    (32, False)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from medzoo.config import NAME_PATTERN
from medzoo.data.contract import NORMALISATIONS, Preprocessing, parse_preprocessing
from medzoo.utils.spec_checks import SpecError, _bool, _Ctx, _int, _mapping, _num, _plain, _seq, _str

__all__ = [
    "Architecture", "FileSpec", "Preprocessing", "SpecError", "TaskSpec", "WeightsSpec",
    "FILE_FORMATS", "FILE_PARTS", "MODEL_PARTS", "NORMALISATIONS", "TASK_LEVELS", "TASK_TYPES", "URL_SCHEMES",
]

TASK_TYPES = ("classification", "multilabel", "regression", "segmentation")
TASK_LEVELS = ("image", "volume", "slice", "series")
FILE_FORMATS = ("safetensors", "medicalnet-pth", "torch-state-dict", "torchvision-resnet", "torchxrayvision", "yaml",
                "json", "onnx", "torchscript")
FILE_PARTS = ("encoder", "heads", "aggregator", "all", "config", "metadata", "model-card")
MODEL_PARTS = ("encoder", "heads", "aggregator")
URL_SCHEMES = ("http", "https", "file")
SHORTCUTS = ("A", "B")
OUTPUT_STRIDES = (8, 16, 32)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*(\.[a-z0-9][a-z0-9_\-]*)*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_SHA_PREFIX_RE = re.compile(r"^[0-9a-f]{8,63}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")


@dataclass(frozen=True)
class Architecture:
    """The encoder contract: a load with a different depth, block, shortcut or widths is an error.

    Attributes:
        encoder: registered encoder name (``resnet10`` ... ``resnet200``).
        output_stride: 8, 16 or 32 (8 is MedicalNet's dilated geometry).
        widths: the four stage widths; ``None`` means the standard (64, 128, 256, 512).
        in_channels: input channels the stem was trained with.
        shortcut: ``"A"`` or ``"B"`` (MedicalNet: B for 10/50/101/152/200, A for 18/34); ``None`` = the default.
        depth, block, layers, bias_downsample: optional detail, as ``ResNetEncoder.architecture()`` reports it
            (``block`` is ``basic`` or ``bottleneck``; ``layers`` the four block counts).
    """

    encoder: str
    output_stride: int = 32
    widths: tuple[int, ...] | None = None
    in_channels: int = 1
    shortcut: str | None = None
    depth: int | None = None
    block: str | None = None
    layers: tuple[int, ...] | None = None
    bias_downsample: bool | None = None

    @classmethod
    def from_dict(cls, d: Any, ctx: _Ctx) -> Architecture:
        d = _mapping(d, ctx, {f.name for f in dataclasses.fields(cls)}, {"encoder"})
        stride = d.get("output_stride", 32)
        if stride not in OUTPUT_STRIDES or isinstance(stride, bool):
            raise ctx.sub("output_stride").fail(f"expected one of {list(OUTPUT_STRIDES)}, got {stride!r}")
        return cls(
            encoder=_str(d["encoder"], ctx.sub("encoder")),
            output_stride=stride,
            widths=_seq(d.get("widths"), ctx.sub("widths"), lambda x, c: _int(x, c, minimum=1), length=4,
                        optional=True),
            in_channels=_int(d.get("in_channels", 1), ctx.sub("in_channels"), minimum=1),
            shortcut=_str(d.get("shortcut"), ctx.sub("shortcut"), choices=SHORTCUTS, optional=True),
            depth=_int(d.get("depth"), ctx.sub("depth"), minimum=1, optional=True),
            block=_str(d.get("block"), ctx.sub("block"), choices=("basic", "bottleneck"), optional=True),
            layers=_seq(d.get("layers"), ctx.sub("layers"), lambda x, c: _int(x, c, minimum=1), length=4,
                        optional=True),
            bias_downsample=_bool(d.get("bias_downsample"), ctx.sub("bias_downsample")),
        )


@dataclass(frozen=True)
class TaskSpec:
    """One task head: its type, label names, decision thresholds and the level it runs at.

    Attributes:
        type: ``classification`` (softmax over labels), ``multilabel`` (sigmoid per label; thresholds required,
            one per label), ``regression`` (named outputs, optional ``ranges``), ``segmentation`` (classes).
        labels: label / class / output names; the head size is ``len(labels)``.
        level: ``image``, ``volume``, ``slice`` or ``series``.
        thresholds: label -> decision threshold in (0, 1); not allowed for regression.
        ranges: regression only: output -> (low, high) of valid values.
        head: registered head name (e.g. ``linear``, ``unet``, ``medicalnet_seg``); ``None`` = the default.
        num_classes: optional; when given it must equal ``len(labels)`` (a consistency check).
    """

    type: str
    labels: tuple[str, ...]
    level: str
    thresholds: dict[str, float] | None = None
    ranges: dict[str, tuple[float, float]] | None = None
    head: str | None = None
    num_classes: int | None = None

    @classmethod
    def from_dict(cls, d: Any, ctx: _Ctx) -> TaskSpec:
        d = _mapping(d, ctx, {f.name for f in dataclasses.fields(cls)}, {"type", "labels", "level"})
        kind = _str(d["type"], ctx.sub("type"), choices=TASK_TYPES)
        labels = _seq(d["labels"], ctx.sub("labels"), lambda x, c: _str(x, c))
        need = 2 if kind in ("classification", "segmentation") else 1
        if len(labels) < need or len(set(labels)) != len(labels):
            raise ctx.sub("labels").fail(f"a {kind} task needs >= {need} unique label names, got {list(labels)}")
        thresholds = cls._thresholds(d.get("thresholds"), kind, labels, ctx.sub("thresholds"))
        n = _int(d.get("num_classes"), ctx.sub("num_classes"), minimum=1, optional=True)
        if n is not None and n != len(labels):
            raise ctx.sub("num_classes").fail(f"{n} does not match the {len(labels)} labels {list(labels)}")
        ranges = None
        if d.get("ranges") is not None:
            if kind != "regression":
                raise ctx.sub("ranges").fail(f"only regression tasks have ranges, this one is {kind}")
            rmap = _mapping(d["ranges"], ctx.sub("ranges"), set(labels))
            ranges = {k: _seq(v, ctx.sub("ranges").sub(k), _num, length=2) for k, v in rmap.items()}
        return cls(type=kind, labels=labels, level=_str(d["level"], ctx.sub("level"), choices=TASK_LEVELS),
                   thresholds=thresholds, ranges=ranges, head=_str(d.get("head"), ctx.sub("head"), optional=True),
                   num_classes=n)

    @staticmethod
    def _thresholds(v: Any, kind: str, labels: tuple[str, ...], ctx: _Ctx) -> dict[str, float] | None:
        if v is None:
            if kind == "multilabel":
                raise ctx.fail(f"a multilabel task needs one threshold per label {list(labels)}")
            return None
        if kind == "regression":
            raise ctx.fail("regression tasks have no thresholds (use 'ranges')")
        v = _mapping(v, ctx, set(labels), set(labels) if kind == "multilabel" else set())
        out = {k: _num(x, ctx.sub(k)) for k, x in v.items()}
        bad = {k: x for k, x in out.items() if not 0.0 < x < 1.0}
        if bad:
            raise ctx.fail(f"thresholds must lie in (0, 1), got {bad}")
        return out


@dataclass(frozen=True)
class FileSpec:
    """One downloadable file.

    Attributes:
        url: primary source: ``https://``, ``http://``, ``file://`` or a plain local path.
        sha256: full lowercase hex digest; ``None`` = unpinned (downloads only with ``allow_unpinned``).
        size: exact size in bytes; may be ``None`` only when unpinned.
        sha256_prefix: leading hex digits of the sha256 (torchvision names its files ``<name>-<8 hex>.pth``); a file
            with only a prefix downloads without ``allow_unpinned``, is checked against the prefix, and its full
            hash is recorded on the first fetch. With ``sha256`` set, the two must agree.
        format: one of ``FILE_FORMATS`` (``medicalnet-pth`` = ``{'state_dict': ...}`` with ``module.`` keys).
        part: what the file holds, one of ``FILE_PARTS``.
        mirrors: further sources, tried in order after ``url``.
        filename: name in the cache; default: the last component of ``url``.
    """

    url: str
    sha256: str | None
    format: str
    part: str = "all"
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    filename: str | None = None
    sha256_prefix: str | None = None

    @property
    def pinned(self) -> bool:
        """True when the catalog pins the sha256."""
        return self.sha256 is not None

    @property
    def name(self) -> str:
        """The file name used in the cache."""
        return self.filename or urlparse(self.url).path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def sources(self) -> tuple[str, ...]:
        """``url`` then the mirrors, in the order they are tried."""
        return (self.url, *self.mirrors)

    @classmethod
    def from_dict(cls, d: Any, ctx: _Ctx) -> FileSpec:
        d = _mapping(d, ctx, {f.name for f in dataclasses.fields(cls)}, {"url", "sha256", "format"})
        sha = d["sha256"]
        if sha is not None and (not isinstance(sha, str) or not _SHA_RE.match(sha)):
            raise ctx.sub("sha256").fail(f"expected 64 lowercase hex digits or null (unpinned), got {sha!r}")
        size = _int(d.get("size"), ctx.sub("size"), optional=True)
        if sha is not None and size is None:
            raise ctx.sub("size").fail("a pinned file (sha256 set) needs its exact size in bytes")
        prefix = d.get("sha256_prefix")
        if prefix is not None and (not isinstance(prefix, str) or not _SHA_PREFIX_RE.match(prefix)):
            raise ctx.sub("sha256_prefix").fail(f"expected 8 to 63 lowercase hex digits or null, got {prefix!r}")
        if prefix is not None and sha is not None and not sha.startswith(prefix):
            raise ctx.sub("sha256_prefix").fail(f"{prefix!r} is not the start of sha256 {sha!r}")
        out = cls(url=_source(d["url"], ctx.sub("url")), sha256=sha, size=size,
                  format=_str(d["format"], ctx.sub("format"), choices=FILE_FORMATS),
                  part=_str(d.get("part", "all"), ctx.sub("part"), choices=FILE_PARTS),
                  mirrors=_seq(d.get("mirrors", ()), ctx.sub("mirrors"), _source),
                  filename=_str(d.get("filename"), ctx.sub("filename"), optional=True), sha256_prefix=prefix)
        if not out.name or "/" in out.name or out.name in (".", ".."):
            raise ctx.sub("filename").fail(f"cannot derive a file name from {out.url!r}; set 'filename'")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in out.name):
            raise ctx.sub("filename").fail(f"{out.name!r}: a cache file name must be printable (no control characters)")
        return out


def _source(v: Any, ctx: _Ctx) -> str:
    """A url with an allowed scheme, or a plain local path."""
    v = _str(v, ctx)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in v):
        raise ctx.fail(f"control character in {v!r}; urls and paths must be printable")
    scheme = urlparse(v).scheme
    # Any scheme counts, with or without '//' (data:, javascript:, ftp:host/x); one letter is a Windows drive.
    if len(scheme) > 1 and scheme not in URL_SCHEMES:
        raise ctx.fail(f"unsupported url scheme {scheme!r} in {v!r}; use one of {list(URL_SCHEMES)} or a path "
                       "(write a local name containing ':' as ./NAME)")
    if scheme in ("http", "https") and not urlparse(v).netloc:
        raise ctx.fail(f"url {v!r} has no host")
    return v


@dataclass(frozen=True)
class WeightsSpec:
    """One catalog entry. See the module docstring; ``from_dict`` validates, ``to_dict`` serialises.

    Attributes:
        name: dotted lowercase name, e.g. ``resnet18.medicalnet23``.
        version: version string of these weights.
        architecture: the encoder contract (:class:`Architecture`).
        parts: model parts the weights cover: ``encoder``, ``aggregator``, ``heads`` or ``heads.<task>``.
        files: the files (:class:`FileSpec`), at least one.
        license: license identifier (SPDX where possible).
        source: where the weights come from (url).
        citation: how to cite them.
        tasks: task name -> :class:`TaskSpec` (empty for encoder-only weights).
        preprocessing: input kind (``volume``, ``image``, ``series``) -> the contract (:class:`Preprocessing`) the
            weights were trained with; empty when the weights declare none. One contract (the flat form) reads as its
            own kind's.
        metrics: free-form results, e.g. ``{"covid": {"dataset": "COVIDx-CT test", "auroc": 0.97}}``.
        versions: software versions the weights were made with (``medzoo``, ``torch``, ``monai``).
        notes: free text (e.g. the expected size of unpinned files).
        description: one line on what the weights are.
    """

    name: str
    version: str
    architecture: Architecture
    parts: tuple[str, ...]
    files: tuple[FileSpec, ...]
    license: str
    source: str
    citation: str
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    preprocessing: dict[str, Preprocessing] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: str | None = None
    description: str | None = None

    @property
    def pinned(self) -> bool:
        """True when every file's sha256 is pinned."""
        return all(f.pinned for f in self.files)

    @property
    def size(self) -> int | None:
        """Total bytes of all files, or ``None`` when some size is unknown."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)

    @classmethod
    def from_dict(cls, d: Any, where: str = "weights spec") -> WeightsSpec:
        """Validate ``d`` and build a spec; a :class:`SpecError` names ``where`` and the offending key."""
        ctx = _Ctx(where)
        allowed = {f.name for f in dataclasses.fields(cls)}
        d = _mapping(d, ctx, allowed, {"name", "version", "architecture", "parts", "files", "license", "source",
                                       "citation"})
        name = _str(d["name"], ctx.sub("name"))
        if not _NAME_RE.match(name):
            raise ctx.sub("name").fail(f"expected lowercase dotted words like 'resnet18.medicalnet23', got {name!r}")
        ctx = _Ctx(f"{where} ({name})" if name not in where else where)
        tasks_raw = d.get("tasks") or {}
        if not isinstance(tasks_raw, dict):
            raise ctx.sub("tasks").fail(f"expected a mapping task name -> task, got {tasks_raw!r}")
        tasks = {_task_name(k, ctx.sub("tasks")): TaskSpec.from_dict(v, ctx.sub("tasks").sub(str(k)))
                 for k, v in tasks_raw.items()}
        files = _seq(d["files"], ctx.sub("files"), FileSpec.from_dict)
        if not files:
            raise ctx.sub("files").fail("expected at least one file")
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            raise ctx.sub("files").fail(f"file names must be unique within an entry, got {names}")
        return cls(
            name=name, version=_version(d["version"], ctx.sub("version")),
            architecture=Architecture.from_dict(d["architecture"], ctx.sub("architecture")),
            parts=_parts(d["parts"], tasks, ctx.sub("parts")), files=files,
            license=_str(d["license"], ctx.sub("license")), source=_str(d["source"], ctx.sub("source")),
            citation=_str(d["citation"], ctx.sub("citation")), tasks=tasks,
            preprocessing=parse_preprocessing(d.get("preprocessing"), ctx.sub("preprocessing")),
            metrics=_metrics(d.get("metrics") or {}, ctx.sub("metrics")),
            versions={k: _str(v, ctx.sub("versions").sub(k)) for k, v in _mapping(
                d.get("versions") or {}, ctx.sub("versions"), {"medzoo", "torch", "monai", "python"}).items()},
            notes=_str(d.get("notes"), ctx.sub("notes"), optional=True),
            description=_str(d.get("description"), ctx.sub("description"), optional=True),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, str, numbers, None) that ``from_dict`` accepts back unchanged."""
        return _plain(dataclasses.asdict(self))


def _task_name(v: Any, ctx: _Ctx) -> str:
    """A task name: it becomes a module key, a file name and a key in exported (MONAI) configs."""
    if not isinstance(v, str) or not NAME_PATTERN.fullmatch(v):
        raise ctx.sub(str(v)).fail("not a valid task name; expected a letter or '_' then letters, digits, '_' or '-' "
                                   "(at most 64 characters)")
    return v


def _version(v: Any, ctx: _Ctx) -> str:
    v = _str(v, ctx)
    if not _VERSION_RE.match(v) or ".." in v:
        raise ctx.fail(f"expected a version like '1.0' or '2024.1-rc1' (letters, digits, . _ + -), got {v!r}")
    return v


def _parts(v: Any, tasks: dict[str, TaskSpec], ctx: _Ctx) -> tuple[str, ...]:
    parts = _seq(v, ctx, lambda x, c: _str(x, c))
    if not parts:
        raise ctx.fail(f"expected at least one of {list(MODEL_PARTS)}")
    for i, p in enumerate(parts):
        head, _, task = p.partition(".")
        if head not in MODEL_PARTS or (task and (head != "heads" or task not in tasks)):
            raise ctx.sub(i).fail(f"expected one of {list(MODEL_PARTS)} or 'heads.<task>' with a task from "
                                  f"{sorted(tasks)}, got {p!r}")
    if any(p.startswith("heads") for p in parts) and not tasks:
        raise ctx.fail("weights that include heads must declare their tasks")
    return parts


def _metrics(v: Any, ctx: _Ctx, depth: int = 0) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ctx.fail(f"expected a mapping, got {v!r}")
    out: dict[str, Any] = {}
    for k, x in v.items():
        if isinstance(x, dict) and depth < 2:
            out[str(k)] = _metrics(x, ctx.sub(str(k)), depth + 1)
        elif isinstance(x, (int, float, str)) and not isinstance(x, bool):
            out[str(k)] = x
        else:
            raise ctx.sub(str(k)).fail(f"expected a number, a string or a nested mapping, got {x!r}")
    return out
