"""The weak-localisation experiment: does a little box supervision improve localisation (image labels + a few boxes)?

An honest experiment, not a second trainer: one small, fixed training routine (the mixed loss of
:mod:`medzoo.train.weak_loc`) run under each condition of a matrix (seeds x box fractions) with the same
initialisation and batch order, scored on held-out boxes. :func:`run_weak_localization` runs the matrix on synthetic
NIH-format corpora; ``tools/weak_loc_experiment.py`` prints its tables and writes ``docs/LOCALIZATION.md``.

- Data: ``open_dataset("nih-cxr14", root)`` with boxes; images are read once, resized to ``image_size`` and kept in
  memory (the experiment is small). Labels are the config's ``labels`` (a subset of the 14 findings).
- Boxes: a seeded random ``box_fraction`` of the *training* images is drawn among those that have boxes (so
  ``box_fraction=0.1`` boxes 10 % of all training images, when that many have boxes); the other images keep only
  their image labels. Batches are drawn from the shuffled pool, so they mix both kinds.
- Evaluation, per held-out box: the class's patch-probability map is resized (bilinear) to the image and min-max
  normalised. **Primary**: binarised at 0.5, IoBB (Wang et al. 2017) of the best connected region against the box,
  hit when ``IoBB >= 0.5``. Also: IoU, Dice and IoBB after keeping the top-k percent of pixels, the pointing
  game, and the image-level mean AUROC.

Example:
    >>> from medzoo.config import from_dict
    >>> cfg = from_dict(WeakLocConfig, {"data": "synth/nih", "box_fraction": 0.1})  # doctest: +SKIP
    >>> model, info = train_weak_loc(cfg); evaluate_localization(model, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medzoo.data.imageio import load_gray
from medzoo.data.readers import open_dataset
from medzoo.data.synth._common import SIZES
from medzoo.data.synth.cxr import write_nih
from medzoo.encoders import create_encoder
from medzoo.heads.localization import LocalizationHead
from medzoo.metrics.auroc import mean_auroc
from medzoo.metrics.localization import binarize_top_k, hit_rates, iobb, localization_scores, minmax_normalize
from medzoo.models import MultiTaskModel
from medzoo.train.weak_loc import NIH_BOX_SPACE, BoxList, rasterize_boxes, record_boxes, weak_loc_loss

__all__ = ["BOX_CLASSES", "LocData", "WeakLocConfig", "WeakLocExperiment", "build_model", "evaluate_localization",
           "load_nih", "run_weak_localization", "train_weak_loc"]

log = logging.getLogger(__name__)
BOX_CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
               "Pneumothorax"]


@dataclass
class WeakLocConfig:
    """One weak-localisation run (``configs/weak_localization/synthetic.yaml``).

    Attributes:
        data: NIH-format folder (``Data_Entry_2017_v2020.csv``, ``BBox_List_2017.csv``, split lists, images).
        labels: findings to learn (the head's labels).
        image_size: images are resized to ``image_size`` square.
        encoder, widths, output_stride: the encoder (stride 8 gives a 12 x 12 patch grid at 96 px).
        pooling: MIL pooling of the head (``noisy_or``, ``lse``, ``max``).
        box_fraction: fraction of training images whose boxes are used (0 = image labels only).
        box_weight: weight of the pixel loss.
        epochs, batch_size, lr, weight_decay: optimisation (AdamW).
        seed: model initialisation, box draw and batch order.
        eval_ks: top-k percentages for IoU/Dice/IoBB.
    """

    data: str = ""
    labels: list[str] = field(default_factory=lambda: list(BOX_CLASSES))
    image_size: int = 96
    encoder: str = "resnet10"
    widths: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    output_stride: int = 8
    pooling: str = "noisy_or"
    box_fraction: float = 0.1
    box_weight: float = 1.0
    epochs: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    eval_ks: list[float] = field(default_factory=lambda: [5.0, 10.0, 20.0])


@dataclass
class LocData:
    """Images ``x [N, 1, S, S]``, labels ``y [N, K]``, per-image boxes (1024-px NIH space) and record ids."""

    x: torch.Tensor
    y: torch.Tensor
    boxes: list[BoxList]
    ids: list[str]


def load_nih(root: str | Path, labels: list[str], split: str, size: int) -> LocData:
    """Read an NIH-format split (``"train_val"`` or ``"test"``) into memory."""
    man = open_dataset("nih-cxr14", root, split=split, boxes=True)
    names = man.label_names["findings"]
    missing = [lab for lab in labels if lab not in names]
    if missing:
        raise ValueError(f"{root}: labels {missing} are not NIH findings {names}")
    cols = [names.index(lab) for lab in labels]
    xs, ys, boxes = [], [], []
    for rec in man.records:
        img = load_gray(rec.image)[None]
        if img.shape[-2:] != (size, size):
            img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        xs.append(img[0])
        ys.append(torch.as_tensor(np.asarray(rec.labels["findings"], dtype=np.float32)[cols]))
        boxes.append(record_boxes(rec, labels, "nih"))
    return LocData(torch.stack(xs), torch.stack(ys), boxes, [r.id for r in man.records])


def build_model(cfg: WeakLocConfig) -> MultiTaskModel:
    """The encoder (2D path) plus one ``localization`` head named ``findings``."""
    enc = create_encoder(cfg.encoder, widths=tuple(cfg.widths), output_stride=cfg.output_stride)
    head = LocalizationHead(enc.out_channels[-1], labels=cfg.labels, pooling=cfg.pooling)
    return MultiTaskModel(enc, {"findings": head}, levels={"findings": "image"})


def _choose_boxed(boxes: list[BoxList], fraction: float, rng: np.random.Generator) -> list[BoxList]:
    """Keep the boxes of ``round(fraction * N)`` randomly chosen boxed images; the others lose theirs."""
    candidates = [i for i, b in enumerate(boxes) if b]
    n = min(len(candidates), int(round(fraction * len(boxes))))
    if fraction > 0 and n < round(fraction * len(boxes)):
        log.warning("box_fraction %.2f asks for %d boxed images, only %d have boxes", fraction,
                    round(fraction * len(boxes)), len(candidates))
    keep = set(rng.choice(candidates, size=n, replace=False).tolist()) if n else set()
    return [b if i in keep else [] for i, b in enumerate(boxes)]


def train_weak_loc(cfg: WeakLocConfig, train: LocData | None = None) -> tuple[MultiTaskModel, dict]:
    """Train on the ``train_val`` split with ``box_fraction`` of the images boxed.

    Returns:
        ``(model in eval mode, info)`` with ``n_train``, ``n_boxed``, ``seconds`` and the last epoch's losses.
    """
    train = train or load_nih(cfg.data, cfg.labels, "train_val", cfg.image_size)
    rng = np.random.default_rng(cfg.seed)
    boxes = _choose_boxed(train.boxes, cfg.box_fraction, rng)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    grid = None
    start, n = time.perf_counter(), len(train.ids)
    for epoch in range(cfg.epochs):
        totals = np.zeros(3)
        for idx in np.array_split(rng.permutation(n), max(1, n // cfg.batch_size)):
            logits = model(train.x[idx])["findings"]
            grid = grid or tuple(logits.shape[2:])
            masks, has_box = rasterize_boxes([boxes[i] for i in idx], len(cfg.labels), grid, NIH_BOX_SPACE)
            out = weak_loc_loss(logits, train.y[idx], masks, has_box, cfg.box_weight, cfg.pooling)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            totals += [out["loss"].item(), out["mil"].item(), out["pixel"].item()]
        log.info("epoch %d: loss %.4f mil %.4f pixel %.4f", epoch, *(totals / max(1, n // cfg.batch_size)))
    info = {"n_train": n, "n_boxed": sum(1 for b in boxes if b), "seconds": time.perf_counter() - start,
            "loss": float(totals[0] / max(1, n // cfg.batch_size))}
    return model.eval(), info


def _heatmaps(model: MultiTaskModel, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        pred = model.predict(x)["findings"]
    return pred["heatmap"].numpy(), pred["probs"].numpy()


def evaluate_localization(model: MultiTaskModel, cfg: WeakLocConfig, test: LocData | None = None) -> dict[str, float]:
    """Localisation scores on the held-out boxed images (one case per box) plus the image-level mean AUROC.

    Returns:
        ``hit@iobb0.5`` (primary), ``iobb`` (mean), ``pointing``, per k ``iou@k``, ``dice@k``, ``hit@iobb0.5@k``,
        ``auroc`` and ``n_boxes``.
    """
    test = test or load_nih(cfg.data, cfg.labels, "test", cfg.image_size)
    heat, probs = [], []
    for chunk in torch.split(torch.arange(len(test.ids)), 64):
        h, p = _heatmaps(model, test.x[chunk])
        heat.append(h)
        probs.append(p)
    heat_all, probs_all = np.concatenate(heat), np.concatenate(probs)
    scale = cfg.image_size / NIH_BOX_SPACE[0]
    rows: list[dict[str, float]] = []
    for i, items in enumerate(test.boxes):
        for k, box in items:
            h = minmax_normalize(heat_all[i, k])
            row = {"iobb": iobb(h >= 0.5, box, scale=scale)}
            scores = localization_scores(h, box, ks=cfg.eval_ks, scale=scale)
            row["pointing"] = scores["pointing"]
            for q in cfg.eval_ks:
                tag = f"{q:g}"
                row[f"iou@{tag}"], row[f"dice@{tag}"] = scores[f"iou@{tag}"], scores[f"dice@{tag}"]
                row[f"iobb@{tag}"] = iobb(binarize_top_k(h, q), box, scale=scale)
            rows.append(row)
    if not rows:
        raise ValueError(f"{cfg.data}: the test split has no boxed images to score localisation on")
    out = {"hit@iobb0.5": hit_rates([r["iobb"] for r in rows], (0.5,), strict=False)[0.5],
           "iobb": float(np.mean([r["iobb"] for r in rows])),
           "pointing": float(np.mean([r["pointing"] for r in rows]))}
    for q in cfg.eval_ks:
        tag = f"{q:g}"
        out[f"iou@{tag}"] = float(np.mean([r[f"iou@{tag}"] for r in rows]))
        out[f"dice@{tag}"] = float(np.mean([r[f"dice@{tag}"] for r in rows]))
        out[f"hit@iobb0.5@{tag}"] = hit_rates([r[f"iobb@{tag}"] for r in rows], (0.5,), strict=False)[0.5]
    out["auroc"] = mean_auroc(probs_all, test.y.numpy())
    out["n_boxes"] = float(len(rows))
    return out


@dataclass
class WeakLocExperiment:
    """The synthetic-corpus experiment (``configs/weak_localization/``): per seed, one NIH-format corpus of
    ``corpus_images`` images, then one run per box fraction (same seed, same images, same initialisation).

    Attributes:
        corpus_images: images in each synthetic NIH corpus (about 75 % train_val, 25 % test, by patient).
        seeds: corpus and training seeds (a claim rests on the mean over several seeds, never on a chosen one).
        box_fractions: the conditions, e.g. ``[0.0, 0.1]`` (image labels only; 10 % of images boxed).
        run: the per-run settings (``data`` and ``seed`` are filled in per seed).
    """

    corpus_images: int = 600
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    box_fractions: list[float] = field(default_factory=lambda: [0.0, 0.1])
    run: WeakLocConfig = field(default_factory=WeakLocConfig)


def run_weak_localization(exp: WeakLocExperiment, workdir: str | Path) -> dict[float, list[dict[str, float]]]:
    """Run the matrix: per seed, write a synthetic NIH corpus under ``workdir`` and train and score each box fraction.

    Returns:
        ``{box_fraction: [scores of each seed]}``, each the dict of :func:`evaluate_localization` plus ``n_boxed``,
        ``n_train`` and ``seconds``.
    """
    results: dict[float, list[dict[str, float]]] = {f: [] for f in exp.box_fractions}
    for seed in exp.seeds:
        size = dataclasses.replace(SIZES["small"], nih=exp.corpus_images, cxr_px=exp.run.image_size)
        root = write_nih(Path(workdir) / f"nih_seed{seed}", seed, size)
        cfg = dataclasses.replace(exp.run, data=str(root), seed=seed)
        train = load_nih(root, cfg.labels, "train_val", cfg.image_size)
        test = load_nih(root, cfg.labels, "test", cfg.image_size)
        for frac in exp.box_fractions:
            model, info = train_weak_loc(dataclasses.replace(cfg, box_fraction=frac), train)
            scores = evaluate_localization(model, cfg, test)
            scores.update(n_boxed=info["n_boxed"], n_train=info["n_train"], seconds=info["seconds"])
            results[frac].append(scores)
            log.info("seed %d box_fraction %.2f: boxed %d/%d, hit@IoBB>=0.5 %.3f on %d boxes, AUROC %.3f (%.1f s)",
                     seed, frac, info["n_boxed"], info["n_train"], scores["hit@iobb0.5"], int(scores["n_boxes"]),
                     scores["auroc"], info["seconds"])
    return results
