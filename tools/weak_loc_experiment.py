"""Does a little box supervision improve localisation? (a) image labels only vs (b) + 10 % of images boxed.

For each seed: write a synthetic NIH ChestX-ray14 corpus (findings drawn at known places, boxes in
``BBox_List_2017.csv``), train the ``localization`` head under each box fraction with the same initialisation and
batch order (``medzoo.train.weak_loc_run``), and score localisation on the held-out boxed test images. Prints the
table (mean and sample SD over seeds) and writes ``docs/LOCALIZATION.md``.

Usage:
    python tools/weak_loc_experiment.py                       # configs/experiments/weak_localization.yaml
    python tools/weak_loc_experiment.py --seeds 0 1 2 --no-doc
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "weak_localization.yaml"
DOC = ROOT / "docs" / "LOCALIZATION.md"
COLUMNS = ["hit@iobb0.5", "iobb", "pointing", "hit@iobb0.5@10", "iou@10", "dice@10", "iou@20", "dice@20", "auroc"]


def run_experiment(exp, workdir: Path) -> dict[float, list[dict[str, float]]]:
    """``{box_fraction: [scores of each seed]}``; each score dict also holds ``n_boxed``, ``seconds``."""
    from medzoo.data.synth._common import SIZES
    from medzoo.data.synth.cxr import write_nih
    from medzoo.train.weak_loc_run import evaluate_localization, load_nih, train_weak_loc

    results: dict[float, list[dict[str, float]]] = {f: [] for f in exp.box_fractions}
    for seed in exp.seeds:
        size = dataclasses.replace(SIZES["small"], nih=exp.corpus_images, cxr_px=exp.run.image_size)
        root = write_nih(workdir / f"nih_seed{seed}", seed, size)
        cfg = dataclasses.replace(exp.run, data=str(root), seed=seed)
        train = load_nih(root, cfg.labels, "train_val", cfg.image_size)
        test = load_nih(root, cfg.labels, "test", cfg.image_size)
        for frac in exp.box_fractions:
            model, info = train_weak_loc(dataclasses.replace(cfg, box_fraction=frac), train)
            scores = evaluate_localization(model, cfg, test)
            scores.update(n_boxed=info["n_boxed"], n_train=info["n_train"], seconds=info["seconds"])
            results[frac].append(scores)
            print(f"seed {seed} box_fraction {frac:.2f}: boxed {info['n_boxed']}/{info['n_train']}, "
                  f"hit@IoBB>=0.5 {scores['hit@iobb0.5']:.3f} on {int(scores['n_boxes'])} boxes, "
                  f"AUROC {scores['auroc']:.3f} ({info['seconds']:.1f} s)", flush=True)
    return results


def _fmt(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} ± {sd:.3f}"


def table(results: dict[float, list[dict[str, float]]]) -> str:
    """A Markdown table: one row per box fraction, mean ± SD over seeds."""
    head = "| condition | boxed / train | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for frac, runs in results.items():
        name = "image labels only" if frac == 0 else f"labels + {100 * frac:g} % boxed"
        boxed = f"{np.mean([r['n_boxed'] for r in runs]):.0f} / {np.mean([r['n_train'] for r in runs]):.0f}"
        lines.append(f"| {name} | {boxed} | " + " | ".join(_fmt([r[c] for r in runs]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def per_seed(results: dict[float, list[dict[str, float]]], seeds: list[int]) -> str:
    """Primary metric per seed and condition."""
    fracs = list(results)
    lines = ["| seed | " + " | ".join(f"box_fraction {f:g}" for f in fracs) + " | test boxes |",
             "|" + "---|" * (len(fracs) + 2)]
    for i, s in enumerate(seeds):
        cells = " | ".join(f"{results[f][i]['hit@iobb0.5']:.3f}" for f in fracs)
        lines.append(f"| {s} | {cells} | {int(results[fracs[0]][i]['n_boxes'])} |")
    return "\n".join(lines)


def write_doc(path: Path, exp, results, seconds: float) -> None:
    """Write docs/LOCALIZATION.md with the measured figures."""
    cfg_text = yaml.safe_dump(dataclasses.asdict(exp), sort_keys=False).strip()
    text = f"""# Weakly supervised localisation: image labels vs image labels + a few boxes

Measured by `python tools/weak_loc_experiment.py` ({len(exp.seeds)} seeds, {seconds:.0f} s in total on
{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)).

**Setup.** Each seed writes its own synthetic NIH ChestX-ray14 corpus ({exp.corpus_images} images at
{exp.run.image_size} px; findings are drawn at known places and `BBox_List_2017.csv` holds their boxes in 1024-px
coordinates, `Infiltrate` spelling). A `resnet10` encoder (widths {tuple(exp.run.widths)}, output stride
{exp.run.output_stride}: a 12 x 12 patch grid) carries the `localization` head (1x1 conv to per-class patch logits,
noisy-OR MIL pooling, Li et al. 2018) over the 8 box classes. Both conditions train from the same initialisation
with the same batch order for {exp.run.epochs} epochs:

- **image labels only**: the MIL loss (BCE on noisy-OR pooled patch probabilities) on every image;
- **labels + 10 % boxed**: the same, plus the pixel BCE inside/outside the boxes (balanced, weight
  {exp.run.box_weight}) on a random 10 % of the training images, drawn among those that have boxes.

**Scoring** (held-out boxed images of the official test list, one case per box): the class's patch-probability map
is resized to the image and min-max normalised. *Primary*: binarised at 0.5, IoBB of the best connected region
(Wang et al. 2017), a hit when IoBB >= 0.5. Also: IoBB hit rate, IoU and Dice after keeping the top 10 / 20 % of
pixels, the pointing game, and the image-level mean AUROC. Mean ± sample SD over seeds.

## Results

{table(results)}

Primary metric per seed:

{per_seed(results, exp.seeds)}

## Configuration

```yaml
{cfg_text}
```

Re-run: `python tools/weak_loc_experiment.py` (the slow test `tests/train/test_weak_loc.py::test_boxes_help_slow`
re-checks the direction on a smaller run).
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; print the table; write the doc."""
    from medzoo.config import from_dict
    from medzoo.train.weak_loc_run import WeakLocExperiment

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    p.add_argument("--epochs", type=int, help="override run.epochs")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/LOCALIZATION.md")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy machine)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    exp = from_dict(WeakLocExperiment, yaml.safe_load(Path(args.config).read_text()))
    if args.seeds:
        exp = dataclasses.replace(exp, seeds=args.seeds)
    if args.epochs:
        exp = dataclasses.replace(exp, run=dataclasses.replace(exp.run, epochs=args.epochs))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medzoo_weakloc_") as tmp:
        results = run_experiment(exp, Path(tmp))
    seconds = time.perf_counter() - start
    print(table(results))
    print(per_seed(results, exp.seeds))
    if not args.no_doc:
        write_doc(DOC, exp, results, seconds)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
