"""Train the tiny multi-task model on the synthetic corpus and print how far each task is above chance.

``python tools/train_synthetic.py [--corpus DIR] [--out DIR] [--threads 2] [--set KEY=VALUE ...]``

It writes the ``small`` synthetic corpus (unless ``--corpus`` points at one), trains
``configs/experiments/pretrain_multitask.yaml`` (CT segmentation + COVIDx-CT series classification + CXR
multilabel on one encoder) on the CPU, and prints the test-split figures next to chance level:

- ``ct_seg``: foreground Dice (lung, lesion) against the Dice of predicting every voxel as that class;
- ``covid_ct``: patient-level accuracy against the majority-class rate, and macro AUROC against 0.5;
- ``findings``: mean AUROC over the 14 findings against 0.5.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python tools/train_synthetic.py` from a checkout
    sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "experiments" / "pretrain_multitask.yaml"


def chance_levels(trainer: object) -> dict[str, float]:
    """Chance references from the test labels: all-class Dice per class, majority-class accuracy."""
    import numpy as np

    out: dict[str, float] = {}
    for bundle in trainer.bundles:  # type: ignore[attr-defined]
        ds = bundle.splits.get("test")
        if ds is None:
            continue
        samples = [ds[i] for i in range(len(ds))]
        if "label.mask" in samples[0]:
            masks = np.concatenate([s["label.mask"].numpy().ravel() for s in samples])
            for k, name in ((1, "lung"), (2, "lesion")):
                frac = float((masks == k).mean())
                out[f"ct_seg/dice/{name}"] = 2 * frac / (1 + frac)  # predict class k everywhere
        if "label.covid" in samples[0]:
            y = np.array([float(s["label.covid"]) for s in samples])
            out["covid_ct/accuracy"] = float(np.bincount(y[~np.isnan(y)].astype(int)).max() / np.sum(~np.isnan(y)))
    out.update({"covid_ct/auroc": 0.5, "findings/mean_auroc": 0.5})
    return out


def run(corpus: Path | None, out: Path, threads: int = 2, overrides: list[str] | None = None) -> dict:
    """Write the small corpus (when ``corpus`` is None), train, and return the figures.

    Returns:
        ``{"result": TrainResult, "chance": {metric: chance level}, "corpus_s", "train_s" (wall), "cpu_s"
        (process CPU time over all threads), "threads"}``.
    """
    import torch

    from medzoo.data.synth import write_synthetic_corpus
    from medzoo.train.trainer import Trainer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if corpus is None:
        corpus = out / "corpus"
        write_synthetic_corpus(corpus, seed=0, size="small", dicom=False)
    t_corpus = time.perf_counter() - t0
    trainer = Trainer(CONFIG, [f"data_root={corpus}", f"output.dir={out / 'run'}", *(overrides or [])], quiet=True)
    t1, c1 = time.perf_counter(), time.process_time()
    result = trainer.fit()
    return {"result": result, "chance": chance_levels(trainer), "corpus_s": t_corpus,
            "train_s": time.perf_counter() - t1, "cpu_s": time.process_time() - c1, "threads": threads}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None, help="an existing synthetic corpus (default: write one)")
    p.add_argument("--out", default=None, help="output folder (default: a temp dir)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="medzoo_synth_"))
    figs = run(Path(args.corpus) if args.corpus else None, out, args.threads, args.overrides)
    res = figs["result"]
    print(f"corpus {figs['corpus_s']:.1f} s, training + evaluation {figs['train_s']:.1f} s wall "
          f"({figs['cpu_s']:.1f} s CPU) on {args.threads} thread(s), {res.step} steps, {res.epoch} epochs; "
          f"run folder {res.run_dir}")
    print(f"{'task/metric (test split)':<28} {'model':>8} {'chance':>8}")
    for key, ref in figs["chance"].items():
        print(f"{key:<28} {res.metrics.get(f'test/{key}', float('nan')):>8.3f} {ref:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
