"""create_model on every YAML in configs/models/, round trips, and bad configs that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medzoo.config import ConfigError, load_config, save_config
from medzoo.models import MultiTaskModel, create_model

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "models").glob("*.yaml"))
TINY = ["encoder.widths=[8,16,32,64]"]
TINY_DENSENET = ["encoder.options={init_features: 8, growth_rate: 4, block_config: [1, 1, 1, 1]}"]  # no widths


def _tiny(path):
    return TINY_DENSENET if load_config(path).encoder.name.startswith("densenet") else TINY


def _inputs(level):
    if level == "volume":
        return torch.randn(2, 1, 16, 32, 32), None
    if level == "image":
        return torch.randn(2, 1, 32, 32), None
    return torch.randn(2, 5, 1, 32, 32), torch.tensor([[False] * 3 + [True] * 2, [False] * 5])


def test_the_four_model_configs_exist():
    assert {p.name for p in CONFIGS} >= {"ct_seg.yaml", "covidx_ct.yaml", "cxr14.yaml", "multitask.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_create_model_forward_backward(path):
    model = create_model(path, overrides=_tiny(path))
    assert isinstance(model, MultiTaskModel)
    if model.config.encoder.name.startswith("densenet"):
        assert model.encoder.out_channels == (8, 12, 10, 9, 8)
    else:
        assert model.config.encoder.widths == (8, 16, 32, 64)
    model.train()
    seen = {}
    for level in sorted(set(model.task_levels.values())):
        x, pad = _inputs(level)
        tasks = [t for t, lv in model.task_levels.items() if lv == level]
        out = model(x, pad, tasks=tasks)
        assert set(out) == set(tasks)
        sum(v.float().mean() for v in out.values()).backward()
        seen.update(out)
    assert set(seen) == set(model.tasks)
    for name, head in model.heads.items():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters()), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_config_values_reach_the_model():
    model = create_model(CONFIGS[0].parent / "multitask.yaml", overrides=TINY)
    assert model.task_levels == {"ct_seg": "volume", "covid_ct": "series", "findings": "image"}
    assert model.heads["findings"].label_names[12] == "Pleural_Thickening"
    assert model.heads["findings"].num_outputs == 14
    assert model.heads["covid_ct"].label_names == ("normal", "pneumonia", "covid19")
    assert model.max_items_per_chunk == 64
    assert type(model.aggregator).__name__ == "AttentionMIL"


def test_dict_dataclass_and_saved_yaml_build_the_same_model(tmp_path):
    cfg = load_config(CONFIGS[0].parent / "covidx_ct.yaml", TINY)
    a = create_model(cfg)
    b = create_model(save_config(a.config, tmp_path / "cfg.yaml"))
    c = create_model({"encoder": {"name": "resnet18", "widths": [8, 16, 32, 64]},
                      "tasks": {"covid_ct": {"type": "classification", "level": "series", "num_classes": 3,
                                             "labels": ["normal", "pneumonia", "covid19"]}},
                      "aggregator": {"name": "attention", "options": {"hidden_features": 128}}})
    shapes = {k: v.shape for k, v in a.state_dict().items()}
    assert shapes == {k: v.shape for k, v in b.state_dict().items()} == {k: v.shape for k, v in c.state_dict().items()}
    assert b.config == a.config


def test_export_directory_round_trip(tmp_path):
    model = create_model(CONFIGS[0].parent / "cxr14.yaml", TINY).eval()
    save_config(model.config, tmp_path / "config.yaml")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    again = create_model(tmp_path).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x)["findings"], model(x)["findings"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="must contain config.yaml"):
        create_model(tmp_path / "empty")
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        create_model(tmp_path / "missing.yaml")


BASE = {"encoder": {"name": "resnet10", "widths": [8, 16, 32, 64]}}


@pytest.mark.parametrize(
    "tasks, extra, match",
    [
        ({"covid": {"type": "clasification", "num_classes": 3}}, {},
         r"tasks\.covid\.type.*Did you mean 'classification'"),
        ({"covid": {"type": "classification"}}, {}, r"tasks\.covid\.num_classes"),
        ({"covid": {"type": "classification", "num_clases": 3}}, {},
         r"tasks\.covid\.num_clases.*tasks\.covid\.num_classes"),
        ({"seg": {"type": "segmentation", "num_classes": 2, "level": "series"}},
         {"aggregator": {"name": "mean"}}, r"tasks\.seg\.level"),
        ({"seg": {"type": "medicalnet_seg", "num_classes": 2, "level": "image"}}, {}, r"tasks\.seg\.level"),
        ({"seg": {"type": "medicalnet_seg", "num_classes": 2}}, {}, r"tasks\.seg.*output_stride 8"),
        ({"covid": {"type": "classification", "num_classes": 3, "level": "series"}}, {},
         r"tasks\.covid\.level.*aggregator"),
        ({"covid": {"type": "classification", "num_classes": 3, "outputs": ["x"]}}, {}, r"tasks\.covid\.outputs"),
        ({"cxr": {"type": "multilabel", "num_classes": 3}}, {}, r"tasks\.cxr\.labels"),
        ({"sev": {"type": "regression", "outputs": {"g": [8, 0]}}}, {}, r"tasks\.sev\.outputs"),
        ({"c": {"type": "classification", "num_classes": 2}}, {"encoder": {"name": "resnet11"}}, r"encoder\.name"),
        ({"c": {"type": "classification", "num_classes": 2, "level": "series"}},
         {"aggregator": {"name": "atention"}}, r"aggregator\.name.*attention"),
        ({"c": {"type": "classification", "num_classes": 2, "level": "series"}},
         {"aggregator": {"name": "attention", "options": {"hiden": 3}}}, r"aggregator\.options"),
        ({"c": {"type": "classification", "num_classes": "two"}}, {}, r"tasks\.c\.num_classes"),
    ],
)
def test_bad_configs_name_the_key(tasks, extra, match):
    cfg = {**BASE, "tasks": tasks, **extra}
    if "encoder" in extra:
        cfg["encoder"] = {**BASE["encoder"], **extra["encoder"]}
    with pytest.raises(ConfigError, match=match):
        create_model(cfg)


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  covid: {type: classification, num_classes: 3, levl: series}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*tasks\.covid\.levl.*Did you mean 'tasks\.covid\.level'"):
        create_model(bad)
