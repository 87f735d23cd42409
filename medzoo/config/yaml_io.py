"""Bounded reading of YAML config and catalog files: regular files only, a size cap, and a loader that refuses deep
nesting and alias bombs while composing, before any Python object is built.

Example:
    >>> safe_load_yaml("a: [1, 2]")
    {'a': [1, 2]}
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BoundedLoader", "ConfigError", "MAX_TEXT_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "YAMLLimitError",
           "load_yaml", "read_text_file", "safe_load_yaml"]

#: Caps on what one YAML text may hold, checked while composing, before any Python object is built: a few hundred
#: bytes of nested aliases otherwise expand into gigabytes, and deep nesting exhausts the interpreter's stack.
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 1_000_000
#: Largest config or catalog file read (the shipped catalog is ~40 KB).
MAX_TEXT_BYTES = 8 << 20


class ConfigError(ValueError):
    """A config is invalid; the message names the file and/or the dotted key."""


#: Task names: they become module keys, output file names and keys in exported (MONAI) configs, where a leading
#: ``$``, ``@`` or ``%`` would be code, a reference or a macro.
class YAMLLimitError(yaml.YAMLError):
    """A YAML text nests deeper, or expands (aliases counted in full) to more nodes, than the caps allow."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark

    def __str__(self) -> str:
        return f"{self.problem}, at line {self.problem_mark.line + 1}" if self.problem_mark else self.problem


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses nesting deeper than :data:`MAX_YAML_DEPTH` and documents whose alias-expanded
    node count exceeds :data:`MAX_YAML_NODES`, while composing (an alias is counted at the size of what it names)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._sizes:
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = []
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in children)
        if self._sizes[id(node)] > MAX_YAML_NODES:
            raise YAMLLimitError(f"expands to more than {MAX_YAML_NODES:,} nodes (aliases counted in full)",
                                 node.start_mark)
        return node


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` under the caps of :class:`BoundedLoader`; raises ``yaml.YAMLError`` (callers name the file).

    Example:
        >>> safe_load_yaml("a: &x [1, 2]\nb: *x")
        {'a': [1, 2], 'b': [1, 2]}
    """
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_text_file(path: str | Path, *, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``.

    The file is opened without blocking and checked with ``fstat`` before a byte is read, so a FIFO (which would
    block forever) or a device such as ``/dev/zero`` (which never ends) is refused, through symlinks too.

    Raises:
        ConfigError: not a regular file, larger than ``max_bytes``, unreadable or not UTF-8; the message names it.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what} ({err.strerror or err})") from err
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: cannot read {what}: not a regular file ({_file_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise ConfigError(f"{path}: {what} of {st.st_size:,} bytes exceeds the {max_bytes:,}-byte limit")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"{path}: {what} grew past the {max_bytes:,}-byte limit while being read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: {what} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block "
                       "device"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


# ------------------------------------------------------------------------------------------------- YAML, composition
def load_yaml(path: str | Path) -> Any:
    """Read one YAML file (a regular file, capped in size, nesting and alias expansion); errors name the file."""
    path = Path(path)
    text = read_text_file(path, what="config file")
    try:
        return safe_load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', None) or err}") from err
