"""Entry point of the ``medzoo`` console script.

Each subcommand lives in its own module under ``medzoo.cli`` and exposes ``add_parser(subparsers)``, which adds
its parser and sets ``func(args) -> int``. Modules are imported only when the CLI starts, never at package import.

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from medzoo.version import __version__

__all__ = ["main", "build_parser"]

# Subcommand modules, in the order ``medzoo --help`` shows them.
COMMAND_MODULES = [
    "medzoo.cli.demo_cmd",
    "medzoo.cli.experiment_cmd",
    "medzoo.cli.zoo_cmd",
    "medzoo.cli.convert_cmd",
    "medzoo.cli.synth_cmd",
    "medzoo.cli.prepare_cmd",
    "medzoo.cli.train_cmd",
    "medzoo.cli.predict_cmd",
    "medzoo.cli.explain_cmd",
    "medzoo.cli.export_cmd",
    "medzoo.cli.align_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="medzoo", description="A model zoo for medical imaging on MONAI.")
    parser.add_argument("--version", action="version", version=f"medzoo {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 on success, 2 on a user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        # User-facing errors: one clear line, no traceback (use -vv for it).
        logging.getLogger("medzoo").debug("traceback", exc_info=True)
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"medzoo {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
