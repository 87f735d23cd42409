"""The weak-localisation experiment: the box draw, a tiny train + score run, its typed config, and (slow) the
direction of docs/LOCALIZATION.md."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_nih(tmp_path_factory):
    import dataclasses

    from medzoo.data.synth._common import SIZES
    from medzoo.data.synth.cxr import write_nih

    root = tmp_path_factory.mktemp("nih")
    return write_nih(root, 0, dataclasses.replace(SIZES["tiny"], nih=60, cxr_px=32))


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops: two threads are far slower on a loaded 2-core machine
    yield
    torch.set_num_threads(before)


def test_choose_boxed_draws_only_boxed_images():
    import numpy as np

    from medzoo.experiment.weak_localization import _choose_boxed

    boxes = [[(0, (0, 0, 1, 1))] if i % 3 == 0 else [] for i in range(30)]
    kept = _choose_boxed(boxes, 0.2, np.random.default_rng(0))
    chosen = [i for i, b in enumerate(kept) if b]
    assert len(chosen) == 6
    assert all(i % 3 == 0 for i in chosen)
    assert not any(_choose_boxed(boxes, 0.0, np.random.default_rng(0)))


def test_train_and_evaluate_on_a_tiny_corpus(tiny_nih, one_thread):
    from medzoo.experiment.weak_localization import WeakLocConfig, evaluate_localization, load_nih, train_weak_loc

    cfg = WeakLocConfig(data=str(tiny_nih), image_size=32, epochs=1, batch_size=8, box_fraction=0.1)
    train = load_nih(tiny_nih, cfg.labels, "train_val", 32)
    assert train.x.shape[1:] == (1, 32, 32)
    assert train.y.shape[1] == 8
    assert any(train.boxes)
    model, info = train_weak_loc(cfg, train)
    assert info["n_boxed"] == min(round(0.1 * info["n_train"]), sum(1 for b in train.boxes if b)) > 0
    scores = evaluate_localization(model, cfg)
    assert scores["n_boxes"] >= 1
    assert all(0.0 <= scores[k] <= 1.0 for k in ("hit@iobb0.5", "iobb", "pointing", "iou@10", "dice@20"))


def test_experiment_config_is_typed():
    import yaml

    from medzoo.config import ConfigError, from_dict
    from medzoo.experiment.weak_localization import WeakLocExperiment
    from medzoo.utils.resources import config_dir

    path = config_dir("weak_localization") / "synthetic.yaml"
    data = yaml.safe_load(path.read_text())
    exp = from_dict(WeakLocExperiment, data)
    assert exp.box_fractions == [0.0, 0.1]
    assert len(exp.seeds) >= 3
    assert exp.run.pooling == "noisy_or"
    data["run"]["box_wieght"] = 2.0
    with pytest.raises(ConfigError, match="box_wieght"):
        from_dict(WeakLocExperiment, data)


@pytest.mark.slow
def test_boxes_help_slow(tmp_path, one_thread):
    """The direction of docs/LOCALIZATION.md on 2 seeds: 10 % boxed beats image labels only on each seed."""
    from medzoo.experiment.weak_localization import WeakLocExperiment, run_weak_localization

    results = run_weak_localization(WeakLocExperiment(corpus_images=400, seeds=[10, 11]), tmp_path)
    for weak, boxed in zip(results[0.0], results[0.1]):
        assert boxed["hit@iobb0.5"] > weak["hit@iobb0.5"]
