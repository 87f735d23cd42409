"""TensorBoard: the event file holds the expected tags, read back with tensorboard's own EventAccumulator."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medzoo.train.tb import overlay
from medzoo.train.trainer import fit
from tests.train.train_fixtures import run_config


def test_event_file_tags(corpus, tmp_path):
    cfg = run_config(corpus, tmp_path / "run", ["msd", "shenzhen"], max_steps=2)
    cfg["output"]["tensorboard"] = True
    res = fit(cfg)
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    expected = {"train/loss", "train/loss/ct_seg", "train/loss/tb", "lr/encoder", "lr/heads", "val/loss",
                "val/ct_seg/mean_dice", "val/ct_seg/dice/lung", "test/tb/accuracy"}
    assert expected <= scalars, expected - scalars
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == [1, 2]
    lr = [e.value for e in acc.Scalars("lr/heads")]  # cosine over 2 steps, no warm-up: factors 1 and 0.5
    base = cfg["train"]["lr"]
    assert lr == pytest.approx([base, base * 0.5 * (1 + math.cos(math.pi / 2))], rel=1e-6)
    assert "val/ct_seg/overlay" in tags["images"]
    img = acc.Images("val/ct_seg/overlay")[0]
    assert (img.width, img.height) == (16, 16)
    plugins = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(plugins)
    assert any(t.startswith("hparam/") for t in scalars)
    assert acc.Scalars("val/loss")[-1].value == pytest.approx(res.metrics["val/loss"], rel=1e-6)


def test_overlay_colours():
    image = torch.zeros(1, 4, 4)
    image[0, 0, 0] = 1.0
    pred = torch.zeros(4, 4, dtype=torch.long)
    target = torch.zeros(1, 4, 4)
    pred[1, 1], target[0, 2, 2], pred[3, 3], target[0, 3, 3] = 1, 1, 2, 1
    rgb = overlay(image, pred, target)
    assert rgb.shape == (3, 4, 4)
    assert torch.allclose(rgb[:, 0, 0], torch.full((3,), 0.6))  # brightest pixel, no mask: grey
    assert rgb[0, 1, 1] > rgb[1, 1, 1]  # prediction only: red
    assert rgb[1, 2, 2] > rgb[0, 2, 2]  # truth only: green
    assert rgb[0, 3, 3] == rgb[1, 3, 3] > rgb[2, 3, 3]  # both: yellow
