"""The task recipes end to end on the tiny synthetic corpus: configs, class-frequency weights, training a few steps,
evaluation, joint segmentation + severity gradients, and the CheXNet table beside the published values."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from scipy.stats import rankdata

from medzoo.config import ConfigError, load_config, to_dict
from medzoo.evaluation.chexnet import (
    PUBLISHED_CHEXNET,
    PUBLISHED_WANG2017,
    chexnet_report,
    chexnet_table,
    collect_scores,
    format_chexnet_table,
    is_synthetic_corpus,
)
from medzoo.experiment.recipes import RECIPES, evaluate_recipe, fit_recipe, load_recipe
from medzoo.utils.resources import config_dir

CONFIG_DIR = config_dir("experiments")
TINY_RESNET = {"name": "resnet10", "widths": [8, 16, 32, 64]}
TINY_DENSENET = {"name": "densenet121", "options": {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]}}
STEPS = 2
# what each recipe's evaluation must report (test split)
EXPECTED = {
    "cxr14_chexnet": ["test/findings/mean_auroc", "test/findings/auroc/Pleural_Thickening"],
    "tb": ["test/tb/accuracy", "test/tb/auroc"],
    "cxr_lung_seg": ["test/lung/dice/lung", "test/lung/mean_dice"],
    "cxr_seg_severity": ["test/lung/mean_dice", "test/severity/mae/geographic_mean",
                         "test/severity/mae/opacity_mean"],
}


def tiny_recipe(name, corpus, tmp_path, *extra):
    enc = TINY_DENSENET if name == "cxr14_chexnet" else TINY_RESNET
    return load_recipe(name, [f"data_root={corpus}", f"output.dir={tmp_path / name}", f"train.max_steps={STEPS}",
                              "train.epochs=5", "train.eval_every=5", "train.device=cpu", "output.tensorboard=false",
                              *extra],
                       image_size=32, batch_size=4, encoder=enc)


@pytest.fixture(scope="module")
def chexnet_run(corpus, tmp_path_factory):
    cfg = tiny_recipe("cxr14_chexnet", corpus, tmp_path_factory.mktemp("runs"))
    return cfg, fit_recipe(cfg)


@pytest.mark.parametrize("name", RECIPES)
def test_model_config_matches_the_experiment(name):
    """configs/models/<recipe>.yaml is the model the experiment trains, and both build."""
    from medzoo.models import create_model

    model_file = load_config(CONFIG_DIR.parent / "models" / f"{name}.yaml")
    experiment = load_recipe(name)
    assert to_dict(model_file) == to_dict(experiment.model)
    assert experiment.data_root == "data/synth"
    assert experiment.data
    if name == "cxr14_chexnet":
        assert model_file.encoder.name == "densenet121"
        assert experiment.data[0].transform.size == [224]
        assert len(model_file.tasks["findings"].labels) == 14
        assert experiment.train.loss["findings"].type == "bce"
        assert experiment.train.loss["findings"].options == {"pos_weight": "auto"}
    tiny = to_dict(model_file)
    tiny["encoder"] = TINY_DENSENET if name == "cxr14_chexnet" else TINY_RESNET
    out = create_model(tiny).eval()(torch.zeros(1, 1, 32, 32))
    assert set(out) == set(model_file.tasks)


def test_unknown_recipe_lists_the_recipes():
    with pytest.raises(KeyError, match="unknown recipe 'chexnet'"):
        load_recipe("chexnet")


@pytest.mark.parametrize("name", [r for r in RECIPES if r != "cxr14_chexnet"])
def test_recipe_trains_and_evaluates(name, corpus, tmp_path):
    cfg = tiny_recipe(name, corpus, tmp_path)
    seen = {}

    def snapshot(trainer):
        seen["start"] = {k: v.detach().clone() for k, v in trainer.model.encoder.state_dict().items()}

    result = fit_recipe(cfg, callbacks={"on_train_start": [snapshot]})
    _check_run(name, cfg, result, seen["start"])


def test_chexnet_recipe_trains_and_evaluates(chexnet_run):
    cfg, result = chexnet_run
    from medzoo.zoo.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(f"{result.run_dir}/last.pt")
    assert model.encoder.architecture()["encoder"] == "densenet121"
    _check_run("cxr14_chexnet", cfg, result, None)


def _check_run(name, cfg, result, start):
    from medzoo.zoo.checkpoint import load_checkpoint

    assert result.step == STEPS
    ckpt = load_checkpoint(f"{result.run_dir}/last.pt")
    if start is not None:  # the encoder moved
        moved = [k for k, v in start.items() if v.is_floating_point()
                 and not torch.equal(v, ckpt["model"][f"encoder.{k}"])]
        assert moved
    metrics = evaluate_recipe(cfg, f"{result.run_dir}/last.pt")
    for key in EXPECTED[name]:
        assert key in metrics
    assert math.isfinite(metrics["test/loss"])
    assert metrics["test/loss"] == pytest.approx(result.metrics["test/loss"], rel=1e-5)


def test_joint_training_updates_the_encoder_from_both_losses(corpus, tmp_path):
    from torch.utils.data import DataLoader

    from medzoo.data.collate import collate
    from medzoo.train.trainer import Trainer

    trainer = Trainer(tiny_recipe("cxr_seg_severity", corpus, tmp_path), quiet=True)
    bundle = trainer.bundles[0]
    batch = next(iter(DataLoader(bundle.splits["train"], batch_size=4, collate_fn=collate)))
    targets = bundle.mapping.targets(batch, bundle.name)
    assert set(targets) == {"lung", "severity"}
    outputs = trainer.model(batch["image"], tasks=list(targets))
    enc = [p for p in trainer.model.encoder.parameters()]
    grads = {}
    for task in ("lung", "severity"):
        loss = trainer.objective.task_loss(task, outputs[task].float(), targets[task])
        grads[task] = torch.autograd.grad(loss, enc, retain_graph=True, allow_unused=True)
        norm = sum(float(g.norm()) for g in grads[task] if g is not None)
        assert norm > 0, f"the {task} loss gives the encoder no gradient"
        other = "severity" if task == "lung" else "lung"
        head_grads = torch.autograd.grad(loss, list(trainer.model.heads[other].parameters()), retain_graph=True,
                                         allow_unused=True)
        assert all(g is None or float(g.abs().sum()) == 0 for g in head_grads)
    stem_l, stem_s = grads["lung"][0], grads["severity"][0]
    assert not torch.allclose(stem_l, stem_s)  # two different signals reach the shared stem
    # and every training step carries both losses
    steps = []
    trainer.add_callback("on_step_end", lambda t: steps.append(dict(t.last_task_losses)))
    trainer.fit()
    assert len(steps) == STEPS
    assert all(set(s) == {"lung", "severity"} for s in steps)


def _auroc(s, y):
    """Mann-Whitney AUROC with mid-ranks for ties, written out independently."""
    r = rankdata(s)
    n1, n0 = (y == 1).sum(), (y == 0).sum()
    return (r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def test_chexnet_table_has_the_published_columns(chexnet_run, corpus):
    cfg, result = chexnet_run
    ckpt = f"{result.run_dir}/last.pt"
    rows = chexnet_table(cfg, ckpt, n_boot=50)
    labels = cfg.model.tasks["findings"].labels
    assert [r["label"] for r in rows] == [*labels, "Mean"]
    for r in rows:
        assert r["chexnet"] == PUBLISHED_CHEXNET[r["label"]]
        assert r["wang2017"] == PUBLISHED_WANG2017[r["label"]]
    assert rows[-1]["chexnet"] == 0.841
    assert rows[labels.index("Hernia")]["chexnet"] == 0.9164
    scores, targets, names = collect_scores(cfg, ckpt)
    assert names == labels
    assert scores.shape == targets.shape
    assert scores.shape[1] == 14
    checked = 0
    for j, r in enumerate(rows[:-1]):
        y = targets[:, j]
        assert r["n_pos"] == int((y == 1).sum())
        assert r["n_neg"] == int((y == 0).sum())
        if r["n_pos"] and r["n_neg"]:
            assert r["auroc"] == pytest.approx(_auroc(scores[:, j], y), abs=1e-9)
            assert r["ci_lower"] <= r["auroc"] + 1e-9
            assert r["auroc"] <= r["ci_upper"] + 1e-9
            checked += 1
        else:
            assert math.isnan(r["auroc"])
    assert checked >= 2
    assert is_synthetic_corpus(corpus)
    assert not is_synthetic_corpus(corpus / "nih")
    text = format_chexnet_table(rows, synthetic=True)
    header = text.splitlines()[0]
    assert "CheXNet 2017 (published, different data)" in header
    assert "Wang et al. 2017 (published, different data)" in header
    assert "| Pleural Thickening |" in text
    assert "| 0.9164 | 0.767 |" in text
    assert "different data" not in format_chexnet_table(rows, synthetic=False)
    rows2, text2 = chexnet_report(cfg, ckpt, n_boot=50)  # what `medzoo evaluate --table chexnet` prints
    assert [r["label"] for r in rows2] == [r["label"] for r in rows]
    assert text2 == text


def test_chexnet_table_needs_a_multilabel_task(corpus, tmp_path):
    cfg = tiny_recipe("tb", corpus, tmp_path)
    with pytest.raises(ConfigError, match="multilabel tasks: \\[\\]"):
        chexnet_table(cfg, tmp_path / "missing.pt")


def test_experiment_yaml_is_plain_yaml():
    for name in RECIPES:
        data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert set(data) <= {"data_root", "model", "data", "train", "output", "init"}


def test_cli_trains_chexnet_recipe_with_auto_pos_weight_and_prints_the_table(corpus, tmp_path, capsys):
    """`medzoo train` resolves `pos_weight: auto`; `medzoo evaluate --table chexnet` prints the published columns."""
    from medzoo.cli.main import main

    config = str(CONFIG_DIR / "cxr14_chexnet.yaml")
    sets = ["--set", f"data_root={corpus}", "--set", "model.encoder.name=resnet10",
            "--set", "model.encoder.widths=[8,16,32,64]"]
    assert main(["-q", "train", "-c", config, *sets, "--set", "train.max_steps=2",
                 "--set", f"output.dir={tmp_path / 'run'}"]) == 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "pos_weight: auto" not in saved
    assert "pos_weight:" in saved
    capsys.readouterr()
    assert main(["-q", "evaluate", "-c", config, *sets, "--model", str(tmp_path / "run" / "last.pt"),
                 "--table", "chexnet", "--n-boot", "20", "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "CheXNet 2017 (published, different data)" in out
    assert "| Cardiomegaly |" in out
    assert (tmp_path / "eval" / "chexnet_table.csv").is_file()
