"""Config core: typed conversion, composition, overrides, strict keys, errors, save/load round trip."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from medzoo.config import (
    ConfigError,
    ModelConfig,
    apply_overrides,
    compose,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


@dataclass
class Inner:
    lr: float = 0.1
    steps: int = 10
    name: str = "x"
    flags: list[str] = field(default_factory=list)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    blocks: dict[str, Inner] = field(default_factory=dict)
    maybe: int | None = None
    size: tuple[int, ...] = (1, 2)
    required: str = "r"


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_typed_conversion_and_defaults():
    cfg = from_dict(Outer, {"inner": {"lr": 1, "flags": ["a"]}, "blocks": {"b": {"steps": 3}}, "size": [4, 5, 6]})
    assert cfg.inner.lr == 1.0
    assert isinstance(cfg.inner.lr, float)
    assert cfg.inner.flags == ["a"]
    assert cfg.blocks["b"].steps == 3
    assert cfg.blocks["b"].lr == 0.1
    assert cfg.size == (4, 5, 6)
    assert cfg.maybe is None
    assert to_dict(cfg)["size"] == [4, 5, 6]


@pytest.mark.parametrize(
    "data, match",
    [
        ({"inner": {"lr": "fast"}}, r"inner\.lr: expected float"),
        ({"inner": {"steps": 1.5}}, r"inner\.steps: expected int"),
        ({"inner": {"steps": True}}, r"inner\.steps: expected int"),
        ({"inner": {"stpes": 1}}, r"unknown key 'inner\.stpes'\. Did you mean 'inner\.steps'"),
        ({"blocks": {"b": {"nam": "y"}}}, r"unknown key 'blocks\.b\.nam'\. Did you mean 'blocks\.b\.name'"),
        ({"size": [1, "a"]}, r"size\[1\]: expected int"),
        ({"inner": 3}, r"inner: expected a mapping"),
        ({"required": None}, r"required: must not be null"),
        ({"zzz": 1}, r"unknown key 'zzz'\. Valid keys"),
    ],
)
def test_errors_name_the_dotted_key(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data)


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"missing required key 'tasks'"):
        load_config({})
    with pytest.raises(ConfigError, match=r"missing required key 'tasks\.covid\.type'"):
        load_config({"tasks": {"covid": {"num_classes": 3}}})


def test_defaults_compose_left_to_right_relative_to_the_including_file(tmp_path):
    a_text = "encoder: {name: resnet10, output_stride: 8}\ntasks:\n  t1: {type: segmentation}\n"
    _write(tmp_path / "base" / "a.yaml", a_text)
    _write(tmp_path / "base" / "b.yaml", "defaults: [c/c.yaml]\nencoder: {name: resnet34}\n")
    _write(tmp_path / "base" / "c" / "c.yaml", "encoder: {widths: [1, 2, 3, 4], in_channels: 2}\n")
    top = _write(
        tmp_path / "exp" / "top.yaml",
        "defaults: [../base/a.yaml, ../base/b.yaml]\nencoder: {in_channels: 3}\ntasks:\n  t1: {num_classes: 2}\n",
    )
    cfg = load_config(top)
    assert cfg.encoder.name == "resnet34"  # b after a
    assert cfg.encoder.output_stride == 8 and cfg.encoder.widths == (1, 2, 3, 4)  # deep merge keeps both
    assert cfg.encoder.in_channels == 3  # the including file wins
    assert cfg.tasks["t1"].type == "segmentation"
    assert cfg.tasks["t1"].num_classes == 2
    assert "defaults" not in compose(top)


def test_lists_are_replaced_not_merged(tmp_path):
    _write(tmp_path / "a.yaml", "tasks:\n  t: {type: multilabel, labels: [a, b, c]}\n")
    top = _write(tmp_path / "b.yaml", "defaults: [a.yaml]\ntasks:\n  t: {labels: [x]}\n")
    assert load_config(top).tasks["t"].labels == ["x"]


def test_composition_errors(tmp_path):
    a = _write(tmp_path / "a.yaml", "defaults: [b.yaml]\n")
    _write(tmp_path / "b.yaml", "defaults: [a.yaml]\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(a)
    missing = _write(tmp_path / "m.yaml", "defaults: [nope.yaml]\n")
    with pytest.raises(ConfigError, match=r"m\.yaml.*'nope\.yaml' not found"):
        load_config(missing)
    bad = _write(tmp_path / "bad.yaml", "tasks:\n  t: {type: x\n  u: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+, column \d+.*invalid YAML"):
        load_config(bad)
    listy = _write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at top level"):
        load_config(listy)


def test_overrides_parse_yaml_scalars_and_create_nested_keys():
    base = {"tasks": {"t": {"type": "classification"}}}
    cfg = load_config(
        base,
        overrides=[
            "encoder.widths=[8, 16, 32, 64]", "tasks.t.num_classes=3", "tasks.t.dropout=0.25",
            "series.checkpoint=true", "tasks.u.type=multilabel", "tasks.u.labels=[a, b]", "tasks.t.labels=null",
        ],
    )
    assert cfg.encoder.widths == (8, 16, 32, 64)
    assert cfg.tasks["t"].num_classes == 3
    assert cfg.tasks["t"].dropout == 0.25
    assert cfg.series.checkpoint is True
    assert cfg.tasks["u"].labels == ["a", "b"]
    assert apply_overrides({"a": {"b": 1}}, ["a.b=x y"]) == {"a": {"b": "x y"}}


@pytest.mark.parametrize(
    "override, match",
    [
        ("encoder.nmae=resnet10", r"unknown key 'encoder\.nmae'\. Did you mean 'encoder\.name'"),
        ("series.max_items_per_chunk=many", r"series\.max_items_per_chunk: expected int"),
        ("encoder", r"expected KEY=VALUE"),
        ("encoder..name=x", r"expected KEY=VALUE"),
        ("encoder.name.x=1", r"'encoder\.name' is not a mapping"),
    ],
)
def test_bad_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config({"tasks": {"t": {"type": "classification"}}, "encoder": {"name": "resnet18"}}, [override])


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        {"tasks": {"sev": {"type": "regression", "level": "image", "outputs": {"geographic": [0, 8], "opacity": None}},
                   "cxr": {"type": "multilabel", "labels": ["a", "b"], "thresholds": {"a": 0.3}}},
         "aggregator": {"name": "attention", "options": {"hidden_features": 16}}},
        ["encoder.widths=[8,16,32,64]"],
    )
    path = save_config(cfg, tmp_path / "sub" / "cfg.yaml")
    again = load_config(path)
    assert again == cfg
    assert isinstance(again, ModelConfig)
    assert load_config(cfg) == cfg  # a dataclass instance is accepted too
