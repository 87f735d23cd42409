"""``medzoo train`` / ``finetune`` / ``evaluate`` on the tiny synthetic corpus."""

from __future__ import annotations

import csv
import json

import torch

from medzoo.cli.main import main
from medzoo.zoo.checkpoint import load_checkpoint
from tests.train.train_fixtures import run_config, write_config


def test_train_resume_finetune_evaluate(corpus, tmp_path, capsys):
    cfg = write_config(run_config(corpus, tmp_path / "pre", ["nih"], max_steps=2), tmp_path / "pre.yaml")
    assert main(["train", "-c", str(cfg), "--set", "train.max_steps=1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "finished: step 1" in out
    assert "mean_auroc" in out
    # --resume with a larger budget continues from last.pt (step 1), it does not start over; a changed
    # config needs --force (tests/train/test_reliability.py)
    assert main(["train", "-c", str(cfg), "--resume", "--force", "--quiet"]) == 0
    assert "finished: step 2" in capsys.readouterr().out
    pre = load_checkpoint(tmp_path / "pre" / "last.pt")

    ft = run_config(corpus, tmp_path / "ft", ["nih"], max_steps=1, freeze_encoder_epochs=1)
    ft_cfg = write_config(ft, tmp_path / "ft.yaml")
    code = main(["finetune", "-c", str(ft_cfg), "--init", f"ckpt:{tmp_path / 'pre' / 'last.pt'}",
                           "--parts", "encoder", "--quiet"])
    assert code == 0
    tuned = load_checkpoint(tmp_path / "ft" / "last.pt")
    assert "ckpt:" in tuned["config"]
    assert "parts: [encoder]" in tuned["config"]
    for key, value in pre["model"].items():  # the frozen encoder holds the loaded weights
        if key.startswith("encoder."):
            assert torch.equal(tuned["model"][key], value), key
    capsys.readouterr()

    code = main(["evaluate", "-c", str(ft_cfg), "--checkpoint", str(tmp_path / "ft" / "last.pt"),
                           "--out", str(tmp_path / "eval")])
    assert code == 0
    table = capsys.readouterr().out
    assert any(line.split()[:3] == ["test", "findings", "mean_auroc"] for line in table.splitlines())
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "eval" / "metrics.csv")))
    assert {(r["task"], r["metric"]) for r in rows} >= {("findings", "mean_auroc"), ("", "loss")}
    by_key = {f"{r['split']}/{r['task']}/{r['metric']}".replace("//", "/"): float(r["value"]) for r in rows}
    assert by_key["test/findings/mean_auroc"] == metrics["test/findings/mean_auroc"]


def test_config_errors_are_one_line(corpus, tmp_path, capsys):
    cfg = write_config(run_config(corpus, tmp_path / "r", ["nih"]), tmp_path / "r.yaml")
    assert main(["train", "-c", str(cfg), "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.epoch'" in err
    assert "Did you mean 'train.epochs'" in err
    assert main(["finetune", "-c", str(cfg), "--init", "hub:x"]) == 2
    assert "init.source" in capsys.readouterr().err
