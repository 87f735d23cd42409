"""Run configs: unknown keys name the dotted key with a suggestion, bad values name their key, YAML round trip."""

from __future__ import annotations

import pytest
import yaml

from medzoo.config import ConfigError
from medzoo.train.config import RunConfig, load_run_config, run_config_yaml
from tests.train.train_fixtures import run_config, write_config


@pytest.fixture
def cfg(tmp_path) -> dict:
    return run_config(tmp_path / "corpus", tmp_path / "run", ["nih", "covidx_ct"])


def test_loads_with_overrides_and_round_trips(cfg, tmp_path):
    path = write_config(cfg, tmp_path / "run.yaml")
    rc = load_run_config(path, ["train.lr=0.5", "train.scheduler.name=exponential", "output.checkpoint_every=3"])
    assert isinstance(rc, RunConfig)
    assert rc.train.lr == 0.5
    assert rc.train.scheduler.name == "exponential"
    assert rc.output.checkpoint_every == 3
    assert rc.data[1].options == {"level": "series"}
    assert rc.data[0].tasks == {"findings": "findings"}
    again = load_run_config(yaml.safe_load(run_config_yaml(rc)))
    assert again == rc


@pytest.mark.parametrize(("override", "message"), [
    ("train.optimiser=sgd", r"unknown key 'train\.optimiser'.*Did you mean 'train\.optimizer'"),
    ("train.scheduler.warmup=3", r"'train\.scheduler\.warmup'.*Did you mean 'train\.scheduler\.warmup_steps'"),
    ("output.tensorbord=true", r"'output\.tensorbord'.*'output\.tensorboard'"),
    ("train.lr=fast", r"train\.lr: expected float"),
    ("train.optimizer=adam", r"train\.optimizer: 'adam' is not one of \['sgd', 'adamw'\]"),
    ("train.sampling=random", r"train\.sampling"),
    ("train.grad_accum=0", r"train\.grad_accum: must be >= 1"),
    ("init.source=zoo", r"init\.source: 'zoo' needs a target"),
    ("init.source=hub:x", r"init\.source: 'hub' is not one of"),
    ("train.loss.nope.type=ce", r"train\.loss\.nope: not a model task"),
    # ranges (a negative clip norm is gradient ascent, min_lr_ratio outside [0, 1] a negative or growing rate...)
    ("train.clip_grad=-1.0", r"train\.clip_grad: must be > 0 or null, got -1\.0"),
    ("train.clip_grad=0.0", r"train\.clip_grad: must be > 0 or null, got 0\.0"),
    ("train.scheduler.min_lr_ratio=-1.0", r"train\.scheduler\.min_lr_ratio: must be in \[0, 1\], got -1\.0"),
    ("train.scheduler.min_lr_ratio=5.0", r"train\.scheduler\.min_lr_ratio: must be in \[0, 1\], got 5\.0"),
    ("train.scheduler.gamma=1.5", r"train\.scheduler\.gamma: must be in \(0, 1\], got 1\.5"),
    ("train.scheduler.gamma=0.0", r"train\.scheduler\.gamma: must be in \(0, 1\]"),
    ("train.scheduler.warmup_steps=-10", r"train\.scheduler\.warmup_steps: must be >= 0, got -10"),
    ("train.early_stopping.patience=-1", r"train\.early_stopping\.patience: must be >= 1, got -1"),
    ("train.early_stopping.patience=0", r"train\.early_stopping\.patience: must be >= 1, got 0"),
    ("train.early_stopping.min_delta=-0.1", r"train\.early_stopping\.min_delta: must be >= 0"),
    ("train.lr=.inf", r"train\.lr: must be > 0, got inf"),
    ("train.lr=.nan", r"train\.lr: must be > 0, got nan"),
    ("train.lr=0.0", r"train\.lr: must be > 0, got 0\.0"),
    ("train.momentum=1.5", r"train\.momentum: must be in \[0, 1\)"),
    ("train.weight_decay=-0.01", r"train\.weight_decay: must be >= 0"),
    ("train.temperature=0.0", r"train\.temperature: must be > 0"),
    ("train.max_minutes=0.0", r"train\.max_minutes: must be > 0 or null"),
    ("train.num_workers=-1", r"train\.num_workers: must be >= 0 or null"),
    ("train.prefetch_factor=0", r"train\.prefetch_factor: must be >= 1 or null"),
    ("train.precision=fp8", r"train\.precision: 'fp8' is not one of \['fp32', 'bf16', 'fp16'\]"),
    ("train.loss.findings.weight=-1.0", r"train\.loss\.findings\.weight: must be >= 0"),
    ("output.checkpoint_every=-1", r"output\.checkpoint_every: must be >= 0"),
])
def test_errors_name_the_key(cfg, tmp_path, override, message):
    path = write_config(cfg, tmp_path / "run.yaml")
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config(path, [override])
    assert str(path) in str(err.value)


@pytest.mark.parametrize("override", ["train.clip_grad=null", "train.clip_grad=0.5", "train.scheduler.min_lr_ratio=0.0",
                                      "train.scheduler.min_lr_ratio=1.0", "train.scheduler.gamma=1.0",
                                      "train.early_stopping.patience=1", "train.scheduler.warmup_steps=0",
                                      "train.momentum=0.0", "train.max_minutes=null", "train.num_workers=0"])
def test_range_bounds_are_accepted(cfg, tmp_path, override):
    load_run_config(write_config(cfg, tmp_path / "run.yaml"), [override])


def test_data_errors_name_the_entry(cfg):
    bad = yaml.safe_load(yaml.safe_dump(cfg))
    bad["data"][1]["tasks"] = {"covid": "covid"}
    with pytest.raises(ConfigError, match=r"data\[1\]\.tasks\.covid: 'covid' is not a model task"):
        load_run_config(bad)
    bad = yaml.safe_load(yaml.safe_dump(cfg))
    bad["data"][0]["batch_sise"] = 3
    with pytest.raises(ConfigError, match=r"data\[0\]\.batch_sise.*Did you mean 'data\[0\]\.batch_size'"):
        load_run_config(bad)
    bad = yaml.safe_load(yaml.safe_dump(cfg))
    bad["data"][0]["fraction"] = 0
    with pytest.raises(ConfigError, match=r"data\[0\]\.fraction"):
        load_run_config(bad)
    bad["data"][0].pop("tasks")
    with pytest.raises(ConfigError, match=r"missing required key 'data\[0\]\.tasks'"):
        load_run_config(bad)
