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
    assert rc.train.lr == 0.5 and rc.train.scheduler.name == "exponential" and rc.output.checkpoint_every == 3
    assert rc.data[1].options == {"level": "series"} and rc.data[0].tasks == {"findings": "findings"}
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
])
def test_errors_name_the_key(cfg, tmp_path, override, message):
    path = write_config(cfg, tmp_path / "run.yaml")
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config(path, [override])
    assert str(path) in str(err.value)


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
