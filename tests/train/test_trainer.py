"""Trainer: a 2-step multi-task run, masked objective, label mapping by name, batch plans, schedules, freezing,
early stopping and the best checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medzoo.config import ConfigError, load_config
from medzoo.train.config import LossConfig, load_run_config
from medzoo.train.data import TaskMapping, label_index
from medzoo.train.objective import Objective
from medzoo.train.optim import lr_factor
from medzoo.train.sampling import BatchPlan, MultiLoader
from medzoo.train.trainer import Trainer, fit
from medzoo.zoo.checkpoint import load_checkpoint, model_from_checkpoint
from tests.train.train_fixtures import run_config

NAN = float("nan")


def test_two_step_multitask_run_writes_everything(corpus, tmp_path):
    cfg = run_config(corpus, tmp_path / "run", ["nih", "covidx_ct", "shenzhen"], max_steps=3)
    res = fit(cfg)
    assert res.step == 3 and res.epoch == 0  # cut short by max_steps: the epoch is not finished
    run = tmp_path / "run"
    for name in ("config.yaml", "last.pt", "best.pt", "result.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    for key in ("val/loss", "test/findings/mean_auroc", "test/tb/accuracy", "test/covid_ct/accuracy",
                "test/covid_ct/slice/accuracy", "test/covid_ct/auroc"):
        assert key in res.metrics, key
    assert math.isfinite(res.metrics["val/loss"])
    ckpt = load_checkpoint(run / "last.pt")
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "rng", "step", "epoch", "best", "config",
                         "versions"}
    assert ckpt["step"] == 3 and ckpt["epoch"] == 0 and ckpt["batch"] == 3  # where a resume continues
    model, stored = model_from_checkpoint(run / "last.pt")
    assert stored["data_root"] == str(corpus)
    assert sorted(model.tasks) == ["covid_ct", "findings", "tb"]
    assert json.loads((run / "result.json").read_text())["step"] == 3


def test_objective_masks_nan_labels():
    mc = load_config({"tasks": {"f": {"type": "multilabel", "level": "image", "labels": ["a", "b", "c"]},
                                "c": {"type": "classification", "level": "image", "num_classes": 3}}})
    obj = Objective(mc, {})
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.tensor([[1.0, NAN, 0.0], [NAN, NAN, NAN], [0.0, 1.0, 1.0], [1.0, 0.0, NAN]])
    cls = torch.tensor([2.0, NAN, 0.0, NAN])
    total, parts = obj({"f": logits, "c": logits}, {"f": y, "c": cls})
    x, t = logits.detach().numpy(), y.numpy()
    valid = ~np.isnan(t)
    bce = np.maximum(x, 0) - x * np.nan_to_num(t) + np.log1p(np.exp(-np.abs(x)))
    expected_f = bce[valid].mean()
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    expected_c = -(logp[0, 2] + logp[2, 0]) / 2
    assert parts["f"] == pytest.approx(expected_f, rel=1e-5)
    assert parts["c"] == pytest.approx(expected_c, rel=1e-5)
    weighted = Objective(mc, {"f": LossConfig(weight=2.5), "c": LossConfig(type="focal", options={"mode": "multiclass"},
                                                                           weight=0.5)})
    total_w, parts_w = weighted({"f": logits, "c": logits}, {"f": y, "c": cls})
    assert parts_w["f"] == pytest.approx(parts["f"]) and parts_w["c"] < parts["c"]  # focal down-weights
    assert float(total_w.detach()) == pytest.approx(2.5 * parts_w["f"] + 0.5 * parts_w["c"], rel=1e-6)
    assert float(total.detach()) == pytest.approx(parts["f"] + parts["c"], rel=1e-6)
    total.backward()
    assert torch.all(logits.grad[1] == 0)  # no label at all: no gradient
    assert logits.grad[3, 2] == 0 and logits.grad[3, 0] != 0  # NaN entry masked, its labelled neighbours are not


def test_label_mapping_by_name():
    # dataset classes in another order and spelling than the head's
    assert label_index(["normal", "pneumonia", "covid19"], ["COVID-19", "Normal", "Pneumonia"], "k",
                       allow_missing=False) == [2, 0, 1]
    # CXR findings through the vocabulary: CheXpert's "Pleural Effusion" is the head's "Effusion"
    assert label_index(["Pleural Effusion", "Edema"], ["Edema", "Effusion", "Mass"], "k") == [1, 0, -1]
    with pytest.raises(ConfigError, match=r"data\[0\]\.tasks\.findings: dataset labels \['Fracture'\]"):
        label_index(["Edema", "Fracture"], ["Edema"], "data[0].tasks.findings")
    assert label_index(["Edema", "Fracture"], ["Edema"], "k", ignore=["Fracture"]) == [0]
    mapping = TaskMapping({"covid": "cov", "findings": "f"}, {"cov": "class", "f": "vector"},
                          {"cov": [1, 2, 0], "f": [1, -1]})
    out = mapping.targets({"label.covid": torch.tensor([0.0, 2.0, NAN]),
                           "label.findings": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}, "ds")
    assert out["cov"][:2].tolist() == [1.0, 0.0]
    assert math.isnan(out["cov"][2])
    assert out["f"][:, 0].tolist() == [1.0, 0.0]
    assert torch.isnan(out["f"][:, 1]).all()
    with pytest.raises(KeyError, match="batch label 'tb' is not mapped"):
        mapping.targets({"label.tb": torch.zeros(2)}, "ds")


def test_unknown_dataset_task_names_the_entry(corpus, tmp_path):
    cfg = run_config(corpus, tmp_path / "run", ["nih"])
    cfg["data"][0]["tasks"] = {"finding": "findings"}
    with pytest.raises(ConfigError, match=r"data\[0\]\.tasks\.finding: dataset 'nih-cxr14' has no task 'finding'"):
        Trainer(cfg)


def test_batch_plans():
    sizes = [5, 2, 1]
    assert BatchPlan(sizes, "round_robin").epoch(0) == [0, 1, 2, 0, 1, 0, 0, 0]
    prop = BatchPlan(sizes, "proportional", seed=3)
    assert sorted(prop.epoch(0)) == sorted(BatchPlan(sizes, "round_robin").epoch(0))
    assert prop.epoch(0) == BatchPlan(sizes, "proportional", seed=3).epoch(0)
    assert prop.epoch(0) != prop.epoch(1) or prop.epoch(1) != prop.epoch(2)
    temp = BatchPlan([90, 10], "temperature", temperature=2.0, seed=0)
    p = temp.probabilities()
    assert p == pytest.approx(np.array([3.0, 1.0]) / 4.0)  # sqrt(90) : sqrt(10) = 3 : 1
    draws = np.concatenate([temp.epoch(e) for e in range(20)])
    assert abs(np.mean(draws == 1) - 0.25) < 0.03
    with pytest.raises(ValueError, match="sampling must be one of"):
        BatchPlan(sizes, "random")


def test_multiloader_resumes_mid_epoch():
    data = [[{"image": torch.tensor([float(i)])} for i in range(10)], [{"image": torch.tensor([100.0 + i])}
                                                                     for i in range(5)]]
    plan = BatchPlan([MultiLoader.batches_per_pass(10, 3), MultiLoader.batches_per_pass(5, 2)], "proportional",
                     seed=1)
    loader = MultiLoader(data, [3, 2], plan, seed=4, collate_fn=lambda s: torch.stack([x["image"] for x in s]))
    full = [(i, b.flatten().tolist()) for i, b in loader.epoch(2)]
    assert len(full) == 5
    assert sorted(i for i, _ in full) == [0, 0, 0, 1, 1]
    for start in range(1, 5):
        assert [(i, b.flatten().tolist()) for i, b in loader.epoch(2, start)] == full[start:]
    assert full != [(i, b.flatten().tolist()) for i, b in loader.epoch(3)]


def test_schedule_and_head_lr(corpus, tmp_path):
    assert lr_factor(0, 10, "cosine", warmup_steps=4) == pytest.approx(0.25)
    assert lr_factor(3, 10, "cosine", warmup_steps=4) == pytest.approx(1.0)
    assert lr_factor(4, 10, "cosine", warmup_steps=4) == pytest.approx(1.0)
    assert lr_factor(10, 10, "cosine", warmup_steps=4, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, "cosine", warmup_steps=4) > 0
    assert lr_factor(6, 10, "cosine", 4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 6)))
    assert lr_factor(5, 10, "exponential", 2, gamma=0.5) == pytest.approx(0.125)
    cfg = run_config(corpus, tmp_path / "run", ["nih"], optimizer="sgd", lr=0.01, head_lr_mult=100.0,
                     scheduler={"name": "none"})
    tr = Trainer(cfg)
    lrs = {g["name"]: g["lr"] for g in tr.optimizer.param_groups}
    assert lrs == pytest.approx({"encoder": 0.01, "heads": 1.0})


def test_freeze_encoder_epochs(corpus, tmp_path):
    cfg = run_config(corpus, tmp_path / "run", ["nih"], freeze_encoder_epochs=1, max_steps=None, epochs=2,
                     lr=0.01)
    seen = []
    tr = Trainer(cfg, callbacks={"on_step_end": [lambda t: seen.append((t.epoch, t.model.encoder_frozen))]})
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    enc0 = tr.model.encoder.conv1.weight.detach().clone()
    head0 = tr.model.heads["findings"].fc.weight.detach().clone()
    tr.total_steps = tr.steps_per_epoch  # stop after the frozen epoch
    tr.fit()
    assert all(frozen for epoch, frozen in seen)
    assert len(seen) == tr.steps_per_epoch
    assert torch.equal(tr.model.encoder.conv1.weight, enc0)  # frozen: unchanged (BN statistics too)
    assert torch.equal(tr.model.state_dict()["encoder.bn1.running_mean"], before["encoder.bn1.running_mean"])
    assert not torch.equal(tr.model.heads["findings"].fc.weight, head0)


def test_early_stopping_and_best_checkpoint(corpus, tmp_path):
    cfg = run_config(corpus, tmp_path / "run", ["shenzhen"], max_steps=None, epochs=6,
                     best_metric="val/tb/accuracy", early_stopping={"metric": "val/loss", "mode": "min", "patience": 1,
                                                                    "min_delta": 100.0})
    res = fit(cfg)
    assert res.stopped_early and res.epoch == 2  # the 2nd evaluation cannot beat the 1st by 100
    best = load_checkpoint(tmp_path / "run" / "best.pt")["best"]
    assert best["metric"] == "val/tb/accuracy"
    assert best == res.best
    assert len(res.history) == 2
    assert best["value"] == max(h["val/tb/accuracy"] for h in res.history)


def test_grad_accumulation_counts_optimizer_steps(corpus, tmp_path):
    cfg = run_config(corpus, tmp_path / "run", ["nih"], max_steps=None, epochs=1, grad_accum=2)
    tr = Trainer(cfg)
    res = tr.fit()
    assert res.step == len(tr.plan) // 2
    assert tr.scheduler.last_epoch == res.step


def test_load_run_config_defaults(corpus, tmp_path):
    rc = load_run_config(run_config(corpus, tmp_path, ["nih"]))
    assert rc.train.best_metric is None
    assert rc.init.source == "scratch"
    assert rc.data[0].fraction == 1.0


@pytest.mark.parametrize("name", ["pretrain_multitask.yaml", "finetune_tb.yaml"])
def test_example_configs_build_on_the_corpus(corpus, tmp_path, name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "experiments" / name
    tr = Trainer(path, [f"data_root={corpus}", f"output.dir={tmp_path}", "init.source=scratch",
                        "output.tensorboard=false"], quiet=True)
    assert tr.total_steps > 0
    assert all("train" in b.splits for b in tr.train_bundles)
    i, batch = next(iter(tr.loader.epoch(0)))
    targets = tr.train_bundles[i].mapping.targets(batch, tr.train_bundles[i].name)
    outputs = tr.model(batch["image"], pad_mask=batch.get("pad_mask"), tasks=list(targets))
    loss, _ = tr.objective(outputs, targets)
    assert torch.isfinite(loss)


def test_mixed_precision_is_refused_on_cpu(corpus, tmp_path):
    for precision in ("bf16", "fp16"):
        cfg = run_config(corpus, tmp_path / "run", ["nih"], precision=precision, max_steps=1)
        with pytest.raises(ConfigError, match=rf"train\.precision: {precision} runs on CUDA only"):
            Trainer(cfg)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(corpus, tmp_path, precision):
    cfg = run_config(corpus, tmp_path / "run", ["nih", "covidx_ct"], precision=precision, max_steps=3,
                     device="cuda")
    tr = Trainer(cfg)
    assert tr.scaler.is_enabled() == (precision == "fp16")  # bf16 keeps fp32's exponent range: no scaler
    res = tr.fit()
    assert res.step == 3
    assert math.isfinite(res.metrics["val/loss"])
