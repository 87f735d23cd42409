"""The one resolver: every kind of model reference is told apart once and made into a model in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from medzoo.config import to_dict
from medzoo.models import create_model
from medzoo.train.checkpoint import save_checkpoint
from medzoo.train.config import InitConfig
from medzoo.train.init import apply_init
from medzoo.zoo.checkpoint import CheckpointError
from medzoo.zoo.loading import load_pretrained
from medzoo.zoo.publish import export_model
from medzoo.zoo.references import parse_ref
from medzoo.zoo.resolver import ResolvedModel, resolve

W = [8, 16, 32, 64]
CFG = {"encoder": {"name": "resnet10", "widths": W},
       "tasks": {"tb": {"type": "classification", "level": "image", "labels": ["normal", "tb"]}}}
PRE = {"modality": ["CXR"], "normalisation": "none", "input_size": [32, 32]}


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    """(model, export dir, training checkpoint) of one tiny model with non-default weights."""
    root = tmp_path_factory.mktemp("refs")
    torch.manual_seed(3)
    model = create_model(CFG)
    with torch.no_grad():
        for prm in model.parameters():
            prm.normal_()
    export = export_model(model, root / "export", name="tiny.tb", preprocessing=PRE)
    ckpt = save_checkpoint(root / "best.pt", {"model": model.state_dict(), "step": 7,
                                              "config": yaml.safe_dump({"model": to_dict(model.config)})})
    return model.eval(), export, ckpt


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("text, kind, target", [
    ("zoo:resnet18.medicalnet23", "zoo", "resnet18.medicalnet23"),
    ("resnet18.medicalnet23", "zoo", "resnet18.medicalnet23"),
    ("ckpt:runs/a/best.pt", "checkpoint", "runs/a/best.pt"),
    ("medicalnet:pretrain/resnet_10.pth", "medicalnet", "pretrain/resnet_10.pth"),
])
def test_prefixes_and_catalog_names_are_parsed_without_touching_files(text, kind, target):
    ref = parse_ref(text)
    assert (ref.kind, ref.target, ref.text) == (kind, target, text)


def test_paths_are_told_apart_by_what_they_are(refs, tmp_path):
    _, export, ckpt = refs
    assert parse_ref(export).kind == "export"
    assert parse_ref(ckpt).kind == "file"


@pytest.mark.parametrize("text, error, match", [
    ("", ValueError, "empty model reference"),
    ("ckpt:", ValueError, "ckpt: needs a target"),
    ("no/such/dir", FileNotFoundError, "not an export directory"),
])
def test_bad_references_name_what_was_expected(text, error, match):
    with pytest.raises(error, match=match):
        parse_ref(text)


def test_a_folder_that_is_not_an_export_is_not_looked_up_in_the_catalog(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an export directory"):
        parse_ref(tmp_path)


def test_export_dir_resolves_with_its_spec_preprocessing_and_report(refs):
    model, export, _ = refs
    r = resolve(export)
    assert isinstance(r, ResolvedModel)
    assert (r.kind, r.source, r.spec.name) == ("export", str(export), "tiny.tb")
    assert r.preprocessing["image"].input_size == (32, 32)
    assert r.model.preprocessing == r.preprocessing  # exports made from the resolved model record it
    assert r.report.ok
    assert r.model.load_report is r.report
    assert _same(model, r.model)


@pytest.mark.parametrize("prefix", ["", "ckpt:"])
def test_checkpoint_resolves_to_its_model_and_stored_config(refs, prefix):
    model, _, ckpt = refs
    r = resolve(f"{prefix}{ckpt}")
    assert r.kind == ("checkpoint" if prefix else "file")
    assert r.spec is None
    assert r.config["model"] == to_dict(model.config)
    assert sorted(r.report.loaded) == sorted(model.state_dict())
    assert _same(model, r.model)


def test_options_do_not_apply_to_a_checkpoint(refs):
    with pytest.raises(TypeError, match="options \\['in_channels'\\] do not apply"):
        resolve(refs[2], in_channels=2)


def test_a_weight_file_alone_cannot_build_a_model(refs, tmp_path):
    model = refs[0]
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="a weight file alone does not say how to build the model"):
        resolve(path)
    plain = tmp_path / "w.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a medzoo training checkpoint"):
        resolve(plain)


def test_loading_into_a_model_takes_the_same_references(refs):
    model, export, ckpt = refs
    for ref in (export, f"ckpt:{ckpt}"):
        fresh = create_model(CFG)
        report = load_pretrained(fresh, ref, parts=["encoder"])
        assert torch.equal(fresh.encoder.conv1.weight, model.encoder.conv1.weight)
        assert not torch.equal(fresh.heads["tb"].fc.weight, model.heads["tb"].fc.weight)
        assert "encoder.conv1.weight" in report.loaded


@pytest.mark.parametrize("parts, head_loaded", [(None, True), (["encoder"], False)])
def test_run_init_from_a_checkpoint_loads_everything_unless_parts_say_otherwise(refs, parts, head_loaded):
    model, _, ckpt = refs
    fresh = create_model(CFG)
    report = apply_init(fresh, InitConfig(f"ckpt:{ckpt}", parts))
    assert torch.equal(fresh.heads["tb"].fc.weight, model.heads["tb"].fc.weight) == head_loaded
    assert ("heads.tb.fc.weight" in report.loaded) == head_loaded
