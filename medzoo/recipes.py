"""The lecture's task recipes, end to end: configs, class-frequency loss weights, and the CheXNet evaluation table.

Recipes (``configs/experiments/<name>.yaml``, each with a matching ``configs/models/<name>.yaml``):

- ``cxr14_chexnet``: 14 ChestX-ray14 findings at 224², a 2D DenseNet-121, BCE weighted by label frequency;
- ``tb``: binary TB screening on the Montgomery and Shenzhen sets;
- ``cxr_lung_seg``: 2D lung segmentation (U-Net decoder, Dice + CE) on the Montgomery / Shenzhen masks;
- ``cxr_seg_severity``: one encoder with a lung-segmentation head and severity regression (geographic 0-8,
  opacity 0-6), trained jointly from a "paths plus label columns" CSV.

``pos_weight: auto`` in a ``bce`` loss (``train.loss.<task>.options``) means "negatives / positives of each label
in the training split", the class balancing of CheXNet (w+ = |N| / (|P| + |N|), w- = |P| / (|P| + |N|); the same
ratio w+ / w-, with the negative term kept at weight 1 as ``BCEWithLogitsLoss`` does). :func:`resolve_pos_weight`
replaces it with the numbers, read from the labels of the same patient-level split the trainer makes (no image is
loaded). :func:`fit_recipe` and :func:`evaluate_recipe` resolve it before calling the trainer.

:func:`chexnet_table` evaluates a checkpoint and lays out per-class AUROC with 95% bootstrap CIs beside the
published CheXNet (Rajpurkar et al. 2017) and Wang et al. 2017 values; :func:`format_chexnet_table` prints it,
with the published columns labelled "published, different data" when the run used the synthetic corpus.

Example:
    >>> cfg = load_recipe("cxr14_chexnet", ["data_root=data/synth"], image_size=32)  # doctest: +SKIP
    >>> result = fit_recipe(cfg, ["train.max_steps=4"])  # doctest: +SKIP
    >>> rows = chexnet_table(cfg, result.run_dir + "/last.pt")  # doctest: +SKIP
    >>> print(format_chexnet_table(rows, synthetic=True))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medzoo.config import ConfigError
from medzoo.train.class_weights import label_counts, resolve_pos_weight

__all__ = [
    "RECIPES", "PUBLISHED_CHEXNET", "PUBLISHED_WANG2017", "recipe_path", "load_recipe", "label_counts",
    "resolve_pos_weight", "fit_recipe", "evaluate_recipe", "collect_scores", "chexnet_table",
    "format_chexnet_table", "chexnet_report", "is_synthetic_corpus",
]

log = logging.getLogger(__name__)

RECIPES = ("cxr14_chexnet", "tb", "cxr_lung_seg", "cxr_seg_severity")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "experiments"

# Headline numbers (shared/reference/dataset_formats.md C1): CheXNet (arXiv 1711.05225, Table) and Wang et al. 2017
# (arXiv 1705.02315, 14-class version), per-class AUROC on NIH ChestX-ray14 with their own splits.
PUBLISHED_CHEXNET = {
    "Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345, "Mass": 0.8676,
    "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887, "Consolidation": 0.7901, "Edema": 0.8878,
    "Emphysema": 0.9371, "Fibrosis": 0.8047, "Pleural_Thickening": 0.8062, "Hernia": 0.9164, "Mean": 0.841,
}
PUBLISHED_WANG2017 = {
    "Atelectasis": 0.716, "Cardiomegaly": 0.807, "Effusion": 0.784, "Infiltration": 0.609, "Mass": 0.706,
    "Nodule": 0.671, "Pneumonia": 0.633, "Pneumothorax": 0.806, "Consolidation": 0.708, "Edema": 0.835,
    "Emphysema": 0.815, "Fibrosis": 0.769, "Pleural_Thickening": 0.708, "Hernia": 0.767, "Mean": 0.738,
}


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


# ------------------------------------------------------------------------------------------------------ configs
def recipe_path(name: str) -> Path:
    """``configs/experiments/<name>.yaml`` of a recipe (a path to a YAML file is returned as it is)."""
    if name in RECIPES:
        return CONFIG_DIR / f"{name}.yaml"
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    raise KeyError(f"unknown recipe {name!r}; recipes: {list(RECIPES)} (or give a YAML path)")


def load_recipe(recipe: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *,
                image_size: int | None = None, batch_size: int | None = None, encoder: Mapping[str, Any] | None = None):
    """A recipe's :class:`~medzoo.train.config.RunConfig` with overrides, for quick runs on small data.

    Args:
        recipe: a name in :data:`RECIPES`, a YAML path or a mapping.
        overrides: dotted ``--set`` overrides (``data_root=...``, ``train.max_steps=4``).
        image_size: replaces every dataset's ``transform.size`` (square images) when given.
        batch_size: replaces every dataset's ``batch_size`` when given.
        encoder: replaces ``model.encoder`` (e.g. a tiny ``{"name": "resnet10", "widths": [8, 16, 32, 64]}``).

    Returns:
        The validated RunConfig (``pos_weight: auto`` still unresolved; see :func:`resolve_pos_weight`).
    """
    from medzoo.config import apply_overrides
    from medzoo.train.config import load_run_config

    if isinstance(recipe, Mapping):
        data = copy.deepcopy(dict(recipe))
    else:
        from medzoo.config import compose

        data = compose(recipe_path(str(recipe)))
    data = apply_overrides(data, overrides)
    for d in data.get("data", []):
        if image_size is not None:
            d.setdefault("transform", {})["size"] = [int(image_size)]
        if batch_size is not None:
            d["batch_size"] = int(batch_size)
    if encoder is not None:
        data.setdefault("model", {})["encoder"] = dict(encoder)
    return load_run_config(data)


def _run_config(cfg: Any, overrides: Sequence[str]) -> Any:
    from medzoo.train.config import RunConfig, load_run_config

    return load_run_config(cfg, overrides) if isinstance(cfg, RunConfig) else load_recipe(cfg, overrides)


def fit_recipe(cfg: Any, overrides: Sequence[str] = (), **kwargs: Any) -> Any:
    """:func:`medzoo.train.fit` after :func:`resolve_pos_weight`; returns its ``TrainResult``."""
    from medzoo.train.trainer import fit

    return fit(resolve_pos_weight(_run_config(cfg, overrides)), **kwargs)


def evaluate_recipe(cfg: Any, checkpoint: str | Path, split: str = "test", overrides: Sequence[str] = (),
                    device: str | None = None) -> dict[str, float]:
    """:func:`medzoo.train.run_eval.evaluate_checkpoint` after :func:`resolve_pos_weight`."""
    from medzoo.train.run_eval import evaluate_checkpoint

    return evaluate_checkpoint(resolve_pos_weight(_run_config(cfg, overrides)), checkpoint, split, device=device)


# ------------------------------------------------------------------------------------------------ CheXNet table
def is_synthetic_corpus(data_root: str | Path) -> bool:
    """True when ``data_root`` holds the ``corpus.json`` that ``medzoo synth`` writes."""
    marker = Path(data_root).expanduser() / "corpus.json"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("format") == "medzoo-synthetic-corpus"
    except (OSError, ValueError, AttributeError):
        return False


def _multilabel_task(run: Any, task: str | None) -> str:
    tasks = [t for t, tc in run.model.tasks.items() if tc.type == "multilabel"]
    if task is None:
        if len(tasks) != 1:
            raise ConfigError(f"model.tasks: give the multilabel task for the CheXNet table; multilabel tasks: {tasks}")
        return tasks[0]
    if task not in tasks:
        raise ConfigError(f"{task!r} is not a multilabel task of the config; multilabel tasks: {tasks}")
    return task


def collect_scores(cfg: Any, checkpoint: str | Path, task: str | None = None, split: str = "test",
                   overrides: Sequence[str] = (), device: str | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """Per-image probabilities and targets of a multilabel task on ``split`` of every dataset that labels it.

    Returns:
        ``(scores [N, L], targets [N, L] with NaN = unknown, label names)``.

    Raises:
        ValueError: no dataset of the config has images of ``split`` labelled for the task.
    """
    import torch
    from torch.utils.data import DataLoader

    from medzoo.data.collate import collate
    from medzoo.models import create_model
    from medzoo.train.data import build_datasets
    from medzoo.train.evaluate import move_batch
    from medzoo.utils.device import resolve_device as _device
    from medzoo.zoo.checkpoint import model_from_checkpoint

    run = resolve_pos_weight(_run_config(cfg, overrides))
    task = _multilabel_task(run, task)
    path = Path(checkpoint)
    model = create_model(path) if path.is_dir() else model_from_checkpoint(path)[0]
    dev = _device(device or run.train.device)
    model.to(dev).eval()
    scores, targets = [], []
    for bundle in build_datasets(run, model):
        ds = bundle.splits.get(split)
        if ds is None or task not in bundle.mapping.sources.values():
            continue
        loader = DataLoader(ds, batch_size=bundle.config.eval_batch_size or bundle.config.batch_size,
                            shuffle=False, collate_fn=collate)
        with torch.no_grad():
            for batch in loader:
                batch = move_batch(batch, dev)
                y = bundle.mapping.targets(batch, bundle.name).get(task)
                if y is not None:
                    scores.append(model(batch["image"], tasks=[task])[task].float().sigmoid().cpu().numpy())
                    targets.append(y.float().cpu().numpy())
    if not scores:
        raise ValueError(f"no dataset of the config has {split!r} images labelled for task {task!r}")
    return np.concatenate(scores), np.concatenate(targets), list(model.heads[task].label_names)


def chexnet_table(cfg: Any, checkpoint: str | Path, task: str | None = None, split: str = "test",
                  overrides: Sequence[str] = (), n_boot: int = 1000, seed: int = 0,
                  device: str | None = None) -> list[dict[str, Any]]:
    """Per-class AUROC with 95% bootstrap CIs beside the published CheXNet and Wang et al. 2017 values.

    Args:
        cfg: the run config (recipe name, YAML path, mapping or RunConfig).
        checkpoint: a Trainer checkpoint or export folder.
        task: the multilabel task (default: the config's only one).
        split: ``train``, ``val`` or ``test``.
        n_boot, seed: bootstrap resamples (of images) and their seed.

    Returns:
        Rows ``{"label", "auroc", "ci_lower", "ci_upper", "n_pos", "n_neg", "chexnet", "wang2017"}``, one per head
        label in the head's order, then ``Mean``; a published value is NaN for a label the papers do not report.
    """
    from medzoo.infer.evaluate import auroc_ci_table

    scores, targets, labels = collect_scores(cfg, checkpoint, task, split, overrides, device)
    rows = auroc_ci_table(scores, targets, labels, n_boot=n_boot, seed=seed)
    chexnet = {_key(k): v for k, v in PUBLISHED_CHEXNET.items()}
    wang = {_key(k): v for k, v in PUBLISHED_WANG2017.items()}
    for r in rows:
        r["chexnet"] = float(chexnet.get(_key(r["label"]), math.nan))
        r["wang2017"] = float(wang.get(_key(r["label"]), math.nan))
    return rows


def _cell(v: float, digits: int) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_chexnet_table(rows: Sequence[Mapping[str, Any]], synthetic: bool = False, digits: int = 3) -> str:
    """Markdown in the CheXNet layout: ``| Pathology | AUROC (95% CI) | n+ / n- | CheXNet | Wang et al. 2017 |``.

    With ``synthetic`` the published columns read "published, different data": the figures beside them come from
    the synthetic corpus and are not comparable. Otherwise they read "published; their split", since neither
    paper used the official ``test_list.txt``.
    """
    tag = "published, different data" if synthetic else "published; their split"
    lines = [f"| Pathology | AUROC (95% CI) | n+ / n- | CheXNet 2017 ({tag}) | Wang et al. 2017 ({tag}) |",
             "|---|---|---|---|---|"]
    for r in rows:
        ours = f"{_cell(r['auroc'], digits)} ({_cell(r['ci_lower'], digits)}-{_cell(r['ci_upper'], digits)})"
        name = str(r["label"]).replace("_", " ")
        pub = f"{_cell(r['chexnet'], 4 if name != 'Mean' else 3)} | {_cell(r['wang2017'], 3)}"
        lines.append(f"| {name} | {ours} | {r['n_pos']} / {r['n_neg']} | {pub} |")
    note = ("Measured on the medzoo synthetic corpus: the published columns (CheXNet, arXiv 1711.05225; Wang et al., "
            "arXiv 1705.02315, 14-class version) come from NIH ChestX-ray14 and are not comparable."
            if synthetic else "Published columns: CheXNet (arXiv 1711.05225) and Wang et al. (arXiv 1705.02315), "
            "each on its own split of NIH ChestX-ray14, not the official test list.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def chexnet_report(cfg: Any, checkpoint: str | Path, split: str = "test", overrides: Sequence[str] = (),
                   n_boot: int = 1000, task: str | None = None, device: str | None = None) -> tuple[list[dict], str]:
    """``(rows, markdown)`` of :func:`chexnet_table` for ``medzoo evaluate --table chexnet``.

    The published columns are labelled "published, different data" when the config's ``data_root`` is the synthetic
    corpus (see :func:`is_synthetic_corpus`).
    """
    run = _run_config(cfg, overrides)
    rows = chexnet_table(run, checkpoint, task=task, split=split, n_boot=n_boot, device=device)
    return rows, format_chexnet_table(rows, synthetic=is_synthetic_corpus(run.data_root))
