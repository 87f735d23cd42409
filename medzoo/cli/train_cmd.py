"""``medzoo train``, ``medzoo finetune`` and ``medzoo evaluate``: thin commands over :mod:`medzoo.train`.

Example:
    medzoo train -c configs/experiments/pretrain_multitask.yaml --set data_root=data/synth --set train.epochs=2
    medzoo train -c configs/experiments/pretrain_multitask.yaml --resume
    medzoo finetune -c configs/experiments/finetune_tb.yaml --init ckpt:runs/pretrain_multitask/best.pt --parts encoder
    medzoo evaluate -c configs/experiments/finetune_tb.yaml --checkpoint runs/finetune_tb/best.pt --out eval/
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run_train", "run_finetune", "run_evaluate", "format_table"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="run config YAML (configs/experiments/...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. train.max_steps=2 (repeatable)")


def add_parser(subparsers: Any) -> None:
    """Add the ``train``, ``finetune`` and ``evaluate`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("train", help="train a model as a run config says", description=__doc__,
                              formatter_class=fmt)
    _common(p)
    p.add_argument("--resume", action="store_true", help="continue from <output.dir>/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)
    p = subparsers.add_parser("finetune", help="train from pretrained weights", description=__doc__,
                              formatter_class=fmt)
    _common(p)
    p.add_argument("--init", required=True, help="zoo:NAME | medicalnet:PATH | ckpt:PATH | scratch")
    p.add_argument("--parts", nargs="+", default=None, help="parts to initialise (encoder, heads, aggregator)")
    p.add_argument("--resume", action="store_true", help="continue from <output.dir>/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_finetune)
    p = subparsers.add_parser("evaluate", help="metrics of a checkpoint on a config's datasets",
                              description=__doc__, formatter_class=fmt)
    _common(p)
    p.add_argument("--checkpoint", required=True, help="a Trainer checkpoint (best.pt / last.pt) or export folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", default=None, help="folder for metrics.csv and metrics.json")
    p.set_defaults(func=run_evaluate)


def format_table(metrics: dict[str, float]) -> str:
    """A plain text table of ``split/task/metric`` values."""
    from medzoo.train.run_eval import metrics_rows

    rows = metrics_rows(metrics)
    w = max([len(r[1]) for r in rows] + [4])
    m = max([len(r[2]) for r in rows] + [6])
    lines = [f"{'split':<6} {'task':<{w}} {'metric':<{m}} {'value':>9}"]
    for split, task, metric, value in rows:
        shown = "nan" if math.isnan(value) else f"{value:.4f}"
        lines.append(f"{split:<6} {task:<{w}} {metric:<{m}} {shown:>9}")
    return "\n".join(lines)


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from medzoo.train.trainer import fit

    quiet = bool(args.quiet or getattr(args, "global_quiet", False))
    result = fit(args.config, [*args.overrides, *extra], resume=args.resume, quiet=quiet)
    print(f"finished: step {result.step}, epoch {result.epoch}, {result.seconds:.1f} s; run folder {result.run_dir}")
    if result.best:
        print(f"best {result.best['metric']} = {result.best['value']:.4f} at step {result.best['step']}")
    if result.metrics:
        print(format_table(result.metrics))
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``medzoo train``."""
    return _train(args, [])


def run_finetune(args: argparse.Namespace) -> int:
    """``medzoo finetune``: ``train`` with ``init.source`` (and ``init.parts``) set from the command line."""
    extra = [f"init.source={args.init}"]
    if args.parts:
        extra.append(f"init.parts=[{', '.join(args.parts)}]")
    return _train(args, extra)


def run_evaluate(args: argparse.Namespace) -> int:
    """``medzoo evaluate``: print the metrics table; write CSV and JSON with ``--out``."""
    from medzoo.train.run_eval import evaluate_checkpoint, metrics_rows

    metrics = evaluate_checkpoint(args.config, args.checkpoint, args.split, args.overrides)
    print(format_table(metrics))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True), encoding="utf-8")
        with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["split", "task", "metric", "value"])
            writer.writerows(metrics_rows(metrics))
        print(f"wrote {out / 'metrics.csv'} and {out / 'metrics.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run these commands without the top-level CLI (``python -m medzoo.cli.train_cmd train -c ...``)."""
    import logging

    parser = argparse.ArgumentParser(prog="medzoo")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except (ValueError, KeyError, OSError, RuntimeError) as exc:  # as medzoo.cli.main: one clear line
        print(f"medzoo {args.command}: error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
