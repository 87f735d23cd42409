"""``pos_weight: auto``: negatives / positives per label of the Trainer's own training split."""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.config import ConfigError
from medzoo.experiment.recipes import load_recipe
from medzoo.train.class_weights import label_counts, resolve_pos_weight

TINY_RESNET = {"name": "resnet10", "widths": [8, 16, 32, 64]}
TINY_DENSENET = {"name": "densenet121", "options": {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]}}


def tiny_recipe(name, corpus, tmp_path, *extra):
    enc = TINY_DENSENET if name == "cxr14_chexnet" else TINY_RESNET
    return load_recipe(name, [f"data_root={corpus}", f"output.dir={tmp_path / name}", "train.max_steps=2",
                              "train.device=cpu", "output.tensorboard=false", *extra],
                       image_size=32, batch_size=4, encoder=enc)


def test_pos_weight_auto_is_negatives_over_positives_of_the_training_split(corpus, tmp_path):
    """The resolved weights equal counts made independently from the trainer's own training split."""
    from medzoo.train.trainer import Trainer

    cfg = resolve_pos_weight(tiny_recipe("cxr14_chexnet", corpus, tmp_path))
    pw = np.asarray(cfg.train.loss["findings"].options["pos_weight"])
    trainer = Trainer(cfg, quiet=True)
    y = np.stack([r.labels["findings"] for r in trainer.bundles[0].splits["train"].records]).astype(np.float64)
    pos, neg = (y == 1).sum(0), (y == 0).sum(0)
    assert pos.sum() > 0 and (pos == 0).any()  # the tiny corpus exercises both branches
    expected = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    np.testing.assert_allclose(pw, expected, rtol=1e-5)
    np.testing.assert_allclose(trainer.objective.fns["findings"].pos_weight.numpy(), expected, rtol=1e-5)
    got_pos, got_neg = label_counts(cfg, "findings")
    np.testing.assert_array_equal(got_pos, pos)
    np.testing.assert_array_equal(got_neg, neg)


def test_pos_weight_auto_needs_a_multilabel_task(corpus, tmp_path):
    cfg = tiny_recipe("tb", corpus, tmp_path, "train.loss.tb.type=bce", "train.loss.tb.options.pos_weight=auto")
    with pytest.raises(ConfigError, match=r"train.loss.tb: pos_weight 'auto' needs a multilabel"):
        resolve_pos_weight(cfg)
    cfg = tiny_recipe("cxr14_chexnet", corpus, tmp_path)
    cfg.data[0].tasks = {"labels": "findings"}
    with pytest.raises(ConfigError, match=r"data\[0\].tasks.labels: dataset 'nih-cxr14' has no task 'labels'"):
        resolve_pos_weight(cfg)
