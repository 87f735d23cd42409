"""``medzoo list [PATTERN]``, ``medzoo info REF`` and ``medzoo download NAME``: browse and fetch the zoo.

``info`` shows a catalog entry's or export's spec, and for every reference (checkpoints and MedicalNet files too) the
preprocessing contract per input kind that ``predict`` and ``explain`` apply.

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

__all__ = ["add_parser", "run_download", "run_info", "run_list"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``list``, ``info`` and ``download`` subcommands."""
    p = subparsers.add_parser("list", help="list encoders and catalog weights")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet50*' (default: all)")
    _catalog_arg(p)
    p.set_defaults(func=run_list)

    p = subparsers.add_parser("info", help="show the spec and preprocessing contract of a model reference")
    p.add_argument("name", help="catalog entry (resnet18.medicalnet23), export directory, ckpt:PATH / checkpoint "
                                "file, or medicalnet:PATH")
    _catalog_arg(p)
    p.set_defaults(func=run_info)

    p = subparsers.add_parser("download", help="download and verify the files of a catalog entry")
    p.add_argument("name", help="catalog entry, e.g. resnet18.medicalnet23")
    p.add_argument("--allow-unpinned", action="store_true",
                   help="download even when the catalog pins no sha256; the computed hash is recorded and reused")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $MEDZOO_HOME or ~/.cache/medzoo)")
    p.add_argument("--verify", action="store_true",
                   help="re-hash cached copies even when their size and times are unchanged (bit rot)")
    _catalog_arg(p)
    p.set_defaults(func=run_download)


def _catalog_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", default=None, help="catalog YAML (default: $MEDZOO_CATALOG or weights/catalog.yaml)")


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


def run_list(args: argparse.Namespace) -> int:
    """Print a table of registered encoders and one of catalog entries matching ``args.pattern``.

    ``pinned`` is ``yes`` (sha256 in the catalog), ``recorded`` (unpinned, hash recorded on first fetch) or ``no``.
    """
    from medzoo.encoders import list_encoders
    from medzoo.utils.tables import render
    from medzoo.zoo.catalog import get_entry, list_entries
    from medzoo.zoo.download import read_pins

    encoders = [e for e in list_encoders() if fnmatch.fnmatch(e, args.pattern)]
    print(f"Encoders ({len(encoders)})")
    print(render(["name"], [[e] for e in encoders]) if encoders else "  (none match)")
    print()
    pins = read_pins()
    rows = []
    for name in list_entries(args.pattern, catalog=args.catalog):
        spec = get_entry(name, catalog=args.catalog)
        recorded = all(f.pinned or f.url in pins for f in spec.files)
        size = spec.size if spec.size is not None or not recorded else sum(
            f.size if f.size is not None else pins[f.url]["size"] for f in spec.files)
        pinned = "yes" if spec.pinned else ("recorded" if recorded else "no")
        rows.append([name, spec.architecture.encoder, ",".join(spec.parts), ",".join(spec.tasks) or "-",
                     pinned, _human(size)])
    print(f"Weights ({len(rows)})")
    print(render(["name", "encoder", "parts", "tasks", "pinned", "size"], rows) if rows else "  (none match)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print the spec (catalog entries, exports) as YAML, the preprocessing contract of every input kind, and, for
    catalog entries, where the files are cached."""
    import json

    import yaml

    from medzoo.data.contract import preprocessing_to_dict
    from medzoo.zoo.catalog import get_entry
    from medzoo.zoo.download import cache_path
    from medzoo.zoo.export import METADATA_FILE
    from medzoo.zoo.preprocessing import preprocessing_of
    from medzoo.zoo.references import parse_ref

    ref = parse_ref(args.name)
    spec = get_entry(ref.target, catalog=args.catalog).to_dict() if ref.kind == "zoo" else None
    if ref.kind == "export" and (Path(ref.target) / METADATA_FILE).is_file():
        spec = json.loads((Path(ref.target) / METADATA_FILE).read_text(encoding="utf-8"))
    dump = {"width": 110, "sort_keys": False, "default_flow_style": None}
    if spec is not None:
        print(yaml.safe_dump({k: v for k, v in spec.items() if k != "preprocessing"}, **dump).rstrip())
    else:
        print(f"reference: {args.name} ({ref.kind})")
    contracts = preprocessing_to_dict(preprocessing_of(args.name, catalog=args.catalog))
    if contracts:
        print(yaml.safe_dump({"preprocessing": contracts}, **dump).rstrip())
    else:
        print("preprocessing: none declared (predict and explain need --preprocessing NAME|FILE)")
    if ref.kind == "zoo":
        entry = get_entry(ref.target, catalog=args.catalog)
        for f in entry.files:
            path = cache_path(entry, f)
            print(f"# {f.name}: {'cached at ' + str(path) if path.is_file() else 'not cached'}"
                  f"{'' if f.pinned else ' (unpinned: download needs --allow-unpinned)'}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Download every file of the entry and print the verified cached paths."""
    from medzoo.zoo.catalog import get_entry
    from medzoo.zoo.download import download_all

    spec = get_entry(args.name, catalog=args.catalog)
    paths = download_all(spec, cache_dir=args.cache_dir, allow_unpinned=args.allow_unpinned,
                         progress=not getattr(args, "quiet", False), verify=getattr(args, "verify", False))
    for p in paths:
        print(p)
    return 0
