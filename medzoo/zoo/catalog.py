"""The weights catalog: YAML files of :class:`~medzoo.zoo.spec.WeightsSpec` entries.

Where entries come from, in order (a later catalog's entry replaces an earlier one of the same name, with a
logged warning):

1. the base catalog: the ``path`` argument, else ``$MEDZOO_CATALOG``, else the ``weights/catalog.yaml`` shipped in
   the package;
2. user catalogs: every ``*.yaml`` under ``$MEDZOO_HOME/catalogs/`` (default ``~/.cache/medzoo/catalogs``).

A catalog file looks like::

    schema: 1
    entries:
      - name: resnet18.medicalnet23
        version: "1.0"
        ...

Errors name the file, the line of the entry and the key. A file source given as a relative plain path is relative
to the folder of the catalog that names it.

Example:
    >>> from medzoo.zoo.catalog import get_entry, list_entries
    >>> "resnet18.medicalnet23" in list_entries("resnet18.*")
    True
    >>> get_entry("resnet18.medicalnet23").architecture.shortcut
    'A'
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from medzoo.config import BoundedLoader, ConfigError, read_text_file
from medzoo.utils.resources import catalog_file
from medzoo.zoo._transfer import atomic_write_bytes
from medzoo.zoo.cache import cache_root, file_lock
from medzoo.zoo.spec import SpecError, WeightsSpec

__all__ = [
    "CATALOG_ENV", "CatalogError", "add_entry", "catalog_paths", "default_catalog_path", "get_entry",
    "list_entries", "load_catalog", "read_catalog_file",
]

log = logging.getLogger(__name__)

CATALOG_ENV = "MEDZOO_CATALOG"
SCHEMA_VERSION = 1
MAX_CATALOG_BYTES = 4 << 20  # the shipped catalog is ~40 KB; a catalog is read whole on every lookup


class CatalogError(SpecError):
    """A catalog file cannot be read or is invalid (names the file, line and key)."""


def default_catalog_path() -> Path:
    """The catalog shipped inside the package (``weights/catalog.yaml``, read through importlib.resources)."""
    return catalog_file()


def catalog_paths(path: str | os.PathLike | None = None) -> list[Path]:
    """The catalog files that are read, in order (see the module docstring)."""
    base = Path(path) if path is not None else Path(os.environ.get(CATALOG_ENV) or default_catalog_path())
    if not base.exists():
        how = "the path given" if path is not None else (f"${CATALOG_ENV}" if os.environ.get(CATALOG_ENV)
                                                         else "the packaged default")
        raise FileNotFoundError(f"weights catalog {base} (from {how}) does not exist; set ${CATALOG_ENV} to a "
                                f"catalog YAML file")
    user_dir = cache_root() / "catalogs"
    user = sorted(user_dir.glob("*.yaml")) if user_dir.is_dir() else []
    return [base, *[p for p in user if p.resolve() != base.resolve()]]


def read_catalog_file(path: str | os.PathLike) -> dict[str, WeightsSpec]:
    """Parse and validate one catalog file; returns name -> spec in file order.

    Raises:
        CatalogError: bad YAML, wrong layout, an invalid entry (file, line and key named) or a duplicate name.
    """
    path = Path(path)
    try:
        st = os.stat(path)
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    except OSError:
        key = None  # _read names the problem
    if key is None or key not in _PARSED:
        specs = _parse(_read(path), str(path))
        value = {name: _anchor_paths(spec, path.parent) for name, spec in specs.items()}
        if key is None:
            return value
        if len(_PARSED) >= 32:
            _PARSED.clear()
        _PARSED[key] = value
    return dict(_PARSED[key])


#: Parsed catalogs keyed on (path, size, mtime, ctime, inode): every lookup reads the catalogs, and parsing YAML
#: in pure Python costs ~0.1 s per catalog; any change to a file changes its key.
_PARSED: dict[tuple, dict[str, WeightsSpec]] = {}


def _read(path: Path) -> str:
    """A catalog's text: regular files only (a FIFO would block, ``/dev/zero`` never ends), capped in size."""
    try:
        return read_text_file(path, max_bytes=MAX_CATALOG_BYTES, what="weights catalog")
    except ConfigError as exc:
        raise CatalogError(str(exc)) from None


def _anchor_paths(spec: WeightsSpec, base: Path) -> WeightsSpec:
    """Relative plain-path sources are relative to the catalog file's folder (a local zoo next to its files)."""

    def fix(src: str) -> str:
        return str(base / src) if "://" not in src and not Path(src).expanduser().is_absolute() else src

    files = tuple(dataclasses.replace(f, url=fix(f.url), mirrors=tuple(map(fix, f.mirrors))) for f in spec.files)
    return dataclasses.replace(spec, files=files)


def _compose(text: str) -> tuple[Any, yaml.Node | None]:
    """The data and the root node of one YAML text, composed once, with capped nesting and alias expansion (a few
    KB of aliases can otherwise expand into GBs)."""
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        return (None if node is None else loader.construct_document(node)), node
    finally:
        loader.dispose()


def _parse(text: str, path: str) -> dict[str, WeightsSpec]:
    try:
        data, root = _compose(text)
        lines = _entry_lines(root)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - {"schema", "entries"}:
        raise CatalogError(f"{path}: expected a mapping with keys 'schema' and 'entries', got "
                           f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    if data.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise CatalogError(f"{path}: key 'schema': this medzoo reads schema {SCHEMA_VERSION}, got {data['schema']!r}")
    entries = data.get("entries") or []
    if not isinstance(entries, list):
        raise CatalogError(f"{path}: key 'entries': expected a list of entries, got {type(entries).__name__}")
    out: dict[str, WeightsSpec] = {}
    for i, raw in enumerate(entries):
        where = f"{path}:{lines[i] if i < len(lines) else '?'}: entry {i}"
        try:
            spec = WeightsSpec.from_dict(raw, where=where)
        except SpecError as exc:
            raise CatalogError(str(exc)) from None
        if spec.name in out:
            raise CatalogError(f"{where}: duplicate entry name {spec.name!r} (names must be unique in a catalog)")
        out[spec.name] = spec
    return out


def _entries_node(node: yaml.Node | None) -> yaml.SequenceNode | None:
    """The YAML node of the top-level ``entries`` list (None when there is none)."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if key.value == "entries" and isinstance(value, yaml.SequenceNode):
            return value
    return None


def _entry_lines(root: yaml.Node | None) -> list[int]:
    """1-based line numbers of the items of the top-level ``entries`` list."""
    node = _entries_node(root)
    return [] if node is None else [item.start_mark.line + 1 for item in node.value]


def load_catalog(path: str | os.PathLike | None = None) -> dict[str, WeightsSpec]:
    """All entries from the base catalog and the user catalogs, name -> spec."""
    out: dict[str, WeightsSpec] = {}
    for p in catalog_paths(path):
        for name, spec in read_catalog_file(p).items():
            if name in out:
                log.warning("catalog %s: entry %r replaces the one from an earlier catalog", p, name)
            out[name] = spec
    return out


def list_entries(pattern: str = "*", *, catalog: str | os.PathLike | None = None) -> list[str]:
    """Sorted entry names matching a shell-style ``pattern`` (e.g. ``"resnet50.*"``)."""
    return sorted(n for n in load_catalog(catalog) if fnmatch.fnmatch(n, pattern))


def get_entry(name: str, *, catalog: str | os.PathLike | None = None) -> WeightsSpec:
    """The spec called ``name``.

    Raises:
        KeyError: unknown name; the message lists the closest names and where the catalogs are.
    """
    entries = load_catalog(catalog)
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    where = ", ".join(str(p) for p in catalog_paths(catalog))
    raise KeyError(f"unknown weights {name!r}.{hint} Catalogs read: {where}. See `medzoo list`.")


def add_entry(catalog_path: str | os.PathLike, spec: WeightsSpec, *, replace: bool = False) -> Path:
    """Append ``spec`` to a catalog file (created if missing), atomically and under a file lock.

    The new entry is appended as text, so the comments of the file survive. With ``replace=True`` an entry of the
    same name is replaced (the file is rewritten and loses its comments).

    Raises:
        ValueError: an entry with that name exists and ``replace`` is False.
        CatalogError: the file is invalid before or after the change (nothing is written then).
    """
    path = Path(catalog_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        old = _parse(_read(path), str(path)) if path.exists() else {}
        if spec.name in old and not replace:
            raise ValueError(f"{path}: an entry named {spec.name!r} exists; pass replace=True to overwrite it")
        if spec.name in old:
            entries = [spec if s.name == spec.name else s for s in old.values()]
            text = _dump_catalog(entries)
        else:
            text = _read(path) if path.exists() else ""
            text = _append_entry(text, spec)
        new = _check_text(text, path, [*old] + ([] if spec.name in old else [spec.name]))
        if new[spec.name] != spec:
            raise CatalogError(f"{path}: entry {spec.name!r} did not read back unchanged; not written")
        atomic_write_bytes(path, text.encode("utf-8"))
    log.info("catalog %s: %s entry %r", path, "replaced" if spec.name in old else "added", spec.name)
    return path


def _prune(v: Any) -> Any:
    """Drop None values and empty containers from mappings, for compact YAML (``sha256: null`` stays explicit)."""
    if isinstance(v, dict):
        return {k: _prune(x) for k, x in v.items() if k == "sha256" or (x is not None and x != [] and x != {})}
    if isinstance(v, list):
        return [_prune(x) for x in v]
    return v


def _entry_yaml(spec: WeightsSpec, indent: int = 2) -> str:
    body = yaml.safe_dump([_prune(spec.to_dict())], sort_keys=False, default_flow_style=None, width=110)
    return "".join(" " * indent + line if line.strip() else line for line in body.splitlines(keepends=True))


def _append_entry(text: str, spec: WeightsSpec) -> str:
    """``text`` with ``spec`` appended as text when the file ends with a block-style entries list, else re-dumped."""
    data, root = _compose(text) if text.strip() else (None, None)
    if data is None:
        return text.rstrip("\n") + ("\n" if text.strip() else "") + _dump_catalog([spec])
    node = _entries_node(root)
    if list(data)[-1] != "entries" or node is None or not node.value or node.flow_style:
        log.info("catalog layout does not allow a plain append; rewriting it (comments are not kept)")
        return _dump_catalog([*_parse(text, "catalog").values(), spec])
    first = text.splitlines()[node.value[0].start_mark.line]  # the "- name: ..." line of the first entry
    return text.rstrip("\n") + "\n" + _entry_yaml(spec, len(first) - len(first.lstrip(" ")))


def _dump_catalog(entries: list[WeightsSpec]) -> str:
    head = f"# medzoo weights catalog (schema: medzoo/zoo/spec.py).\nschema: {SCHEMA_VERSION}\nentries:\n"
    return head + "".join(_entry_yaml(s) for s in entries)


def _check_text(text: str, path: Path, names: list[str]) -> dict[str, WeightsSpec]:
    new = _parse(text, f"{path} (after the change)")
    if list(new) != names:
        raise CatalogError(f"{path}: the updated catalog would hold {list(new)}, expected {names}; not written")
    return new
