"""The local cache: its root folder and an inter-process file lock (shared by downloads and catalog writes).

Example:
    >>> import os
    >>> cache_root("/tmp/medzoo-cache").name
    'medzoo-cache'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX; elsewhere downloads still work, without the inter-process lock.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["HOME_ENV", "cache_root", "file_lock"]

HOME_ENV = "MEDZOO_HOME"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$MEDZOO_HOME``, else ``~/.cache/medzoo``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "medzoo").expanduser()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive inter-process lock held on ``path`` (created if missing) for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
