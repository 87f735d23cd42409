"""``medzoo convert medicalnet IN.pth --out DIR``: foreign checkpoints to medzoo export directories."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a foreign checkpoint (MedicalNet) into an export directory")
    p.add_argument("format", choices=["medicalnet"], help="the checkpoint's format")
    p.add_argument("input", help="the checkpoint file (resnet_*.pth or a MedicalNet train.py checkpoint)")
    p.add_argument("--out", required=True, help="the export directory to write")
    p.add_argument("--name", default=None, help="the weights' name in metadata (default: the file's stem)")
    p.add_argument("--output-stride", type=int, default=8, choices=[8, 16, 32], help="encoder geometry (default 8)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medzoo.zoo.convert import convert_medicalnet

    out = convert_medicalnet(args.input, args.out, name=args.name, output_stride=args.output_stride,
                             overwrite=args.force)
    meta = json.loads((out / "metadata.json").read_text())
    arch = meta["architecture"]
    print(f"wrote {out}")
    for key in ("encoder", "block", "layers", "widths", "shortcut", "in_channels", "output_stride"):
        print(f"  {key:<14} {arch[key]}")
    print(f"  {'parts':<14} {', '.join(meta['parts'])}")
    return 0
