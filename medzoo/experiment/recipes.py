"""Task recipes end to end: a recipe's run config (with quick-run overrides), training and evaluation.

Recipes (``configs/experiments/<name>.yaml``, each with a matching ``configs/models/<name>.yaml``), shipped with the
package:

- ``cxr14_chexnet``: 14 ChestX-ray14 findings at 224², a 2D DenseNet-121, BCE weighted by label frequency
  (``pos_weight: auto``, see :mod:`medzoo.train.class_weights`); evaluated with the CheXNet table
  (:mod:`medzoo.evaluation.chexnet`);
- ``tb``: binary TB screening on the Montgomery and Shenzhen sets;
- ``cxr_lung_seg``: 2D lung segmentation (U-Net decoder, Dice + CE) on the Montgomery / Shenzhen masks;
- ``cxr_seg_severity``: one encoder with a lung-segmentation head and severity regression (geographic 0-8,
  opacity 0-6), trained jointly from a "paths plus label columns" CSV.

Example:
    >>> cfg = load_recipe("cxr14_chexnet", ["data_root=data/synth"], image_size=32)  # doctest: +SKIP
    >>> result = fit_recipe(cfg, ["train.max_steps=4"])  # doctest: +SKIP
    >>> evaluate_recipe(cfg, result.run_dir + "/last.pt")["test/findings/mean_auroc"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medzoo.config import apply_overrides, compose
from medzoo.evaluation.checkpoint import evaluate_checkpoint
from medzoo.train.config import RunConfig, load_run_config
from medzoo.train.trainer import TrainResult, fit
from medzoo.utils.resources import config_dir

__all__ = ["RECIPES", "evaluate_recipe", "fit_recipe", "load_recipe", "recipe_path"]

RECIPES = ("cxr14_chexnet", "tb", "cxr_lung_seg", "cxr_seg_severity")


# ------------------------------------------------------------------------------------------------------ configs
def recipe_path(name: str) -> Path:
    """``configs/experiments/<name>.yaml`` of a recipe (a path to a YAML file is returned as it is)."""
    if name in RECIPES:
        return config_dir("experiments") / f"{name}.yaml"
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    raise KeyError(f"unknown recipe {name!r}; recipes: {list(RECIPES)} (or give a YAML path)")


def load_recipe(recipe: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *, image_size: int | None = None,
                batch_size: int | None = None, encoder: Mapping[str, Any] | None = None) -> RunConfig:
    """A recipe's :class:`~medzoo.train.config.RunConfig` with overrides, for quick runs on small data.

    Args:
        recipe: a name in :data:`RECIPES`, a YAML path or a mapping.
        overrides: dotted ``--set`` overrides (``data_root=...``, ``train.max_steps=4``).
        image_size: replaces every dataset's ``transform.size`` (square images) when given.
        batch_size: replaces every dataset's ``batch_size`` when given.
        encoder: replaces ``model.encoder`` (e.g. a tiny ``{"name": "resnet10", "widths": [8, 16, 32, 64]}``).

    Returns:
        The validated RunConfig (``pos_weight: auto`` still unresolved; see
        :func:`medzoo.train.class_weights.resolve_pos_weight`).
    """
    if isinstance(recipe, Mapping):
        data = copy.deepcopy(dict(recipe))
    else:
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


def _run_config(cfg: Any, overrides: Sequence[str]) -> RunConfig:
    return load_run_config(cfg, overrides) if isinstance(cfg, RunConfig) else load_recipe(cfg, overrides)


def fit_recipe(cfg: Any, overrides: Sequence[str] = (), **kwargs: Any) -> TrainResult:
    """:func:`medzoo.train.fit` on a recipe (the Trainer resolves ``pos_weight: auto``); returns its result."""
    return fit(_run_config(cfg, overrides), **kwargs)


def evaluate_recipe(cfg: Any, checkpoint: str | Path, split: str = "test", overrides: Sequence[str] = (),
                    device: str | None = None) -> dict[str, float]:
    """:func:`medzoo.evaluation.checkpoint.evaluate_checkpoint` on a recipe (which resolves ``pos_weight: auto``)."""
    return evaluate_checkpoint(_run_config(cfg, overrides), checkpoint, split, device=device)
