"""``medzoo convert {medicalnet,imagenet,torchxrayvision} IN --out DIR``: foreign checkpoints to export directories.

Library imports sit inside the functions, so that ``medzoo --help`` stays light (see :mod:`medzoo.cli`).
"""

from __future__ import annotations

import argparse
import json

FORMATS = ("medicalnet", "imagenet", "torchxrayvision")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a foreign checkpoint (MedicalNet, torchvision ImageNet ResNet, "
                                       "TorchXRayVision) into an export directory")
    p.add_argument("format", choices=FORMATS, help="the checkpoint's format")
    p.add_argument("input", help="the checkpoint: resnet_*.pth (MedicalNet), resnet*-<hash>.pth (torchvision), "
                                 "or a TorchXRayVision .pt (read with an allow-listed unpickler, never run)")
    p.add_argument("--out", required=True, help="the export directory to write")
    p.add_argument("--name", default=None, help="the weights' name in metadata (default: the file's stem)")
    p.add_argument("--output-stride", type=int, default=None, choices=[8, 16, 32],
                   help="encoder geometry (default: 8 for MedicalNet, 32 for ImageNet)")
    p.add_argument("--inflate", default="centre", choices=["centre", "mean"],
                   help="imagenet: 2D->3D kernels: centre slice (the 2D path equals the 2D network) or I3D mean")
    p.add_argument("--in-channels", type=int, default=3,
                   help="imagenet: input channels; 1 sums the RGB stem for grey images (default 3)")
    p.add_argument("--weights", default=None,
                   help="torchxrayvision: the TXV weights name (e.g. densenet121-res224-all) when the file name "
                        "does not say it; gives the published labels and op_threshs")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=run)


def _convert(args: argparse.Namespace):
    from medzoo.zoo import convert

    if args.format == "medicalnet":
        return convert.convert_medicalnet(args.input, args.out, name=args.name, output_stride=args.output_stride or 8,
                                          overwrite=args.force)
    if args.format == "imagenet":
        return convert.convert_imagenet(args.input, args.out, name=args.name, inflate=args.inflate,
                                        in_channels=args.in_channels, output_stride=args.output_stride or 32,
                                        overwrite=args.force)
    return convert.convert_torchxrayvision(args.input, args.out, weights=args.weights, name=args.name,
                                           overwrite=args.force)


def run(args: argparse.Namespace) -> int:
    out = _convert(args)
    meta = json.loads((out / "metadata.json").read_text())
    arch = meta["architecture"]
    print(f"wrote {out}")
    for key in ("encoder", "block", "layers", "widths", "shortcut", "in_channels", "output_stride"):
        if key in arch:
            print(f"  {key:<14} {arch[key]}")
    print(f"  {'parts':<14} {', '.join(meta['parts'])}")
    for task, spec in meta.get("tasks", {}).items():
        print(f"  {'task ' + task:<14} {spec['type']}: {', '.join(spec['labels'])}")
    pre = meta["preprocessing"]
    print(f"  {'preprocessing':<14} {pre['normalisation']}, input {pre.get('input_size')}")
    return 0
