"""Names that would be code in a MONAI config are refused at config load, model build, weight load and export;
``--force`` replaces only an export (or an empty folder), never a folder that holds anything else."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml

from medzoo.cli import export_cmd
from medzoo.cli.main import main
from medzoo.config import ConfigError, check_name, load_config, to_dict
from medzoo.encoders import create_encoder
from medzoo.models import MultiTaskModel, build_heads, create_model
from medzoo.zoo.bundle import write_bundle
from medzoo.zoo.publish import export_model, model_metadata
from medzoo.zoo.resolver import resolve
from medzoo.zoo.spec import SpecError, WeightsSpec
from tests.helpers import TINY_WIDTHS
from tests.zoo.medicalnet_reference import MedicalNetResNet, randomize, save_released

EVIL = "$open('PWNED', 'w')"  # no '.', so that a model can be built around the config checks
CLS = {"type": "classification", "level": "image", "labels": ["no", "yes"]}
CFG = {"encoder": {"name": "resnet10", "widths": TINY_WIDTHS}, "tasks": {"cxr": CLS}}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    export_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("name", ["cxr", "covid_ct", "Lung-Seg", "_private", "t" * 64])
def test_valid_names_pass(name):
    assert check_name(name, f"tasks.{name}") == name


@pytest.mark.parametrize("name", [EVIL, "@network_def", "%macro", "a.b", "a b", "1st", "", "../up", "t" * 65, 3])
def test_invalid_names_are_refused_naming_the_key(name):
    with pytest.raises(ConfigError, match=r"^tasks\.x: .* is not a valid name"):
        check_name(name, "tasks.x")


def test_config_load_refuses_a_crafted_task_naming_the_file_and_key(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({**CFG, "tasks": {"a": CLS, EVIL: CLS}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: tasks.{EVIL}: ")


def test_model_build_refuses_a_crafted_task():
    enc = create_encoder("resnet10", widths=TINY_WIDTHS)
    with pytest.raises(ConfigError, match=r"tasks\.\$open"):
        build_heads({EVIL: load_config(CFG).tasks["cxr"]}, enc, None)


def _crafted_model() -> MultiTaskModel:
    """A model whose task name no config would let through (built around the config checks)."""
    model = create_model(CFG).eval()
    return MultiTaskModel(model.encoder, {"a": model.heads["cxr"], EVIL: build_heads(load_config(CFG).tasks,
                          model.encoder, None)["cxr"]}, levels={"a": "image", EVIL: "image"}).eval()


def test_export_refuses_a_crafted_task_and_writes_nothing(tmp_path):
    model = _crafted_model()
    meta = {"name": "crafted", "tasks": {EVIL: {"type": "classification", "labels": ["no", "yes"]}}}
    for task in (EVIL, "a"):  # a bundle of the plain task would still carry the crafted name in its metadata
        with pytest.raises(ValueError, match="not a valid name"):
            write_bundle(model, tmp_path / "bundle", metadata=meta, task=task)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _craft_export(tmp_path):
    """An export folder whose config.yaml and metadata.json were edited to name a crafted task."""
    out = export_model(create_model(CFG).eval(), tmp_path / "exp", name="tiny.cxr")
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["tasks"] = {EVIL: config["tasks"].pop("cxr")}
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    meta = json.loads((out / "metadata.json").read_text())
    meta["tasks"] = {EVIL: meta["tasks"].pop("cxr")}
    (out / "metadata.json").write_text(json.dumps(meta))
    return out


def test_weight_load_refuses_a_crafted_export_and_export_writes_no_bundle(tmp_path):
    src = _craft_export(tmp_path)
    with pytest.raises(ValueError, match="not a valid"):
        resolve(str(src))
    with pytest.raises(ValueError, match="not a valid"):
        _cli(["export", str(src), "--out", str(tmp_path / "out"), "--format", "bundle"])
    assert not (tmp_path / "out").exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and EVIL in p.read_text(errors="ignore")]
    assert sorted(p.relative_to(src).as_posix() for p in leftovers) == ["config.yaml", "metadata.json"]


def test_weight_load_refuses_a_checkpoint_naming_a_crafted_task(tmp_path):
    model = create_model(CFG)
    config = to_dict(model.config)
    config["tasks"] = {EVIL: config["tasks"]["cxr"]}
    state = {k.replace("heads.cxr.", f"heads.{EVIL}."): v for k, v in model.state_dict().items()}
    torch.save({"model": state, "config": yaml.safe_dump({"model": config})}, tmp_path / "best.pt")
    with pytest.raises(ValueError, match=r"tasks\.\$open.*not a valid name"):
        resolve(str(tmp_path / "best.pt"))


def test_catalog_entry_with_a_crafted_task_is_refused_naming_the_key():
    meta = model_metadata(create_model(CFG), name="tiny.cxr")
    meta["tasks"] = {EVIL: meta["tasks"]["cxr"]}
    meta["files"] = [{"url": "https://example.org/w.safetensors", "sha256": "0" * 64, "size": 1,
                      "format": "safetensors"}]
    with pytest.raises(SpecError, match=r"^catalog.yaml \(tiny.cxr\): key .tasks\.\$open.*not a valid task name"):
        WeightsSpec.from_dict(meta, where="catalog.yaml")


def _precious(folder):
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")


def _intact(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_export_force_replaces_an_export_or_an_empty_folder_only(tmp_path):
    model = create_model(CFG)
    torch.save({"model": model.state_dict(), "config": yaml.safe_dump({"model": to_dict(model.config)})},
               tmp_path / "best.pt")
    precious = tmp_path / "precious"
    _precious(precious)
    with pytest.raises(FileExistsError, match="not a medzoo export folder"):
        _cli(["export", str(tmp_path / "best.pt"), "--out", str(precious), "--force"])
    assert _intact(precious) == ["notes.txt", "sub", "sub/data.csv"]
    assert (precious / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert _cli(["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "empty"), "--force"]) == 0
    assert _cli(["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "empty"), "--force"]) == 0
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_convert_force_leaves_a_folder_that_is_not_an_export(tmp_path):
    path = tmp_path / "resnet_10.pth"
    save_released(randomize(MedicalNetResNet(10, "B", TINY_WIDTHS)), path)
    precious = tmp_path / "precious"
    _precious(precious)
    assert main(["convert", "medicalnet", str(path), "--out", str(precious), "--force"]) == 2
    assert _intact(precious) == ["notes.txt", "sub", "sub/data.csv"]
    assert main(["convert", "medicalnet", str(path), "--out", str(tmp_path / "mn")]) == 0
    assert main(["convert", "medicalnet", str(path), "--out", str(tmp_path / "mn"), "--force"]) == 0


def test_run_config_refuses_a_crafted_dataset_label_space():
    from medzoo.train.config import load_run_config

    run = {"model": CFG, "data": [{"kind": "shenzhen", "root": "/data/sz", "tasks": {"%macro": "cxr"}}]}
    with pytest.raises(ConfigError, match=r"data\[0\]\.tasks\.%macro: '%macro' is not a valid name"):
        load_run_config(run)
