"""What a cell's result depends on beyond its config text: the content of its starting weights and of its data.

The runner keys each cell on the sha256 of its resolved run config *and* of :func:`cell_inputs`, so that a cell is
reused only when its inputs are the same bytes, not merely the same names:

- weights: ``scratch`` is nothing; ``zoo:NAME`` is the catalog entry as it reads now (file URLs, sha256 pins,
  version: ``publish --replace`` changes it); an export folder, ``ckpt:PATH``, ``medicalnet:PATH`` or a weight file
  is the sha256 of every file;
- data: each dataset's manifest, through :func:`medzoo.data.fingerprint.records_fingerprint` (images and masks by
  size and mtime, listings by sha256).

Example:
    >>> weights_fingerprint("scratch")
    'scratch'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medzoo.data import open_dataset
from medzoo.data.fingerprint import content_signature, records_fingerprint
from medzoo.zoo.catalog import get_entry
from medzoo.zoo.references import parse_ref

__all__ = ["cell_inputs", "weights_fingerprint", "data_fingerprints"]

_HASHES: dict[str, tuple[list[Any], Any]] = {}  # weight path -> (stat signature, content signature)


def weights_fingerprint(source: str | None) -> Any:
    """What the weights named by ``source`` hold now (see the module docstring); a reference that does not resolve
    gives its error text, so the key changes once it does."""
    if not source or source == "scratch":
        return "scratch"
    try:
        ref = parse_ref(source)
        if ref.kind == "zoo":
            return {"zoo": ref.target, "entry": get_entry(ref.target).to_dict()}
        return {ref.kind: _hashed(ref.target)}
    except (OSError, KeyError, ValueError) as err:
        return {"unresolved": source, "error": str(err)}


def _stat_key(path: Path) -> list[Any]:
    # ctime too: any write (or a utime() restoring the old mtime) sets it to now, so the memo never hides an edit
    try:
        st = path.stat()
    except OSError:
        return [os.fspath(path)]
    return [os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _hashed(path: str) -> Any:
    """:func:`content_signature` of ``path``, hashed again only when a file's stat (ctime included) changed."""
    p = Path(path)
    stat = [_stat_key(f) for f in sorted(p.rglob("*"))] if p.is_dir() else _stat_key(p)
    known = _HASHES.get(os.fspath(p))
    if known is None or known[0] != stat:
        known = _HASHES[os.fspath(p)] = (stat, content_signature(p))
    return known[1]


def data_fingerprints(run_cfg: Any) -> list[Any]:
    """Per ``data`` entry of a run config: its kind, root and options, and the fingerprint of its manifest (or the
    error opening it gave, so that the cell fails with that error when it runs)."""
    out = []
    for d in run_cfg.data:
        root = Path(run_cfg.data_root).expanduser() / d.root
        try:
            fp = records_fingerprint(open_dataset(d.kind, root, **d.options))
        except (OSError, ValueError, KeyError) as err:
            fp = f"cannot open: {err}"
        out.append({"kind": d.kind, "root": str(root), "options": json.dumps(d.options, sort_keys=True, default=str),
                    "records": fp})
    return out


def cell_inputs(run_cfg: Any, weights: str | None) -> dict[str, Any]:
    """The content a cell depends on: its starting weights (``weights``, the init or baseline source) and data."""
    return {"weights": weights_fingerprint(weights), "data": data_fingerprints(run_cfg)}
