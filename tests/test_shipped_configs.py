"""Every shipped config folder has one schema, and every YAML in it loads with that schema (unknown keys are
errors); a new folder without a schema fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medzoo.config import from_dict, load_config
from medzoo.experiment.config import load_experiment_config
from medzoo.experiment.weak_localization import WeakLocExperiment
from medzoo.train.align import AlignTrainConfig
from medzoo.train.config import load_run_config
from medzoo.utils.resources import package_file


def _typed(schema: type):
    return lambda path: from_dict(schema, yaml.safe_load(Path(path).read_text(encoding="utf-8")))


#: folder of configs/ -> the loader of its one schema
SCHEMAS = {
    "experiments": load_run_config,           # RunConfig: medzoo train / finetune / evaluate
    "models": load_config,                    # ModelConfig: create_model
    "transfer": load_experiment_config,       # ExperimentConfig: medzoo experiment
    "align": _typed(AlignTrainConfig),        # medzoo align --train
    "weak_localization": _typed(WeakLocExperiment),  # tools/weak_loc_experiment.py
}
CONFIGS = package_file("configs")
FILES = sorted((p.parent.name, p) for p in CONFIGS.glob("*/*.yaml"))


def test_every_config_folder_has_a_schema():
    assert sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()) == sorted(SCHEMAS)


def test_every_folder_holds_configs():
    assert {folder for folder, _ in FILES} == set(SCHEMAS)


@pytest.mark.parametrize("folder, path", FILES, ids=[f"{f}/{p.name}" for f, p in FILES])
def test_config_loads_with_its_folders_schema(folder, path):
    assert SCHEMAS[folder](path) is not None


@pytest.mark.parametrize("folder", ["experiments", "transfer", "align", "weak_localization"])
def test_a_config_of_another_folder_is_refused(folder):
    """The schemas differ: a file of one folder does not pass another's loader, so the folders cannot mix."""
    other = next(p for f, p in FILES if f != folder and f != "models")
    with pytest.raises(Exception, match="unknown|missing|expected|required"):
        SCHEMAS[folder](other)
