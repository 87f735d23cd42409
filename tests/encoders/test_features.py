"""timm-style stage metadata: ``feature_info`` (channels, reduction, module name) and ``out_indices``."""

from __future__ import annotations

import pytest
import torch

from medzoo.encoders import FeatureInfo, create_encoder, list_encoders
from tests.helpers import TINY_WIDTHS

DENSE_TINY = {"init_features": 8, "growth_rate": 4, "block_config": (2, 1, 2, 1)}
NAMES = ["resnet10", "resnet50", "densenet121"]


def build(name: str, **kw):
    torch.manual_seed(0)
    extra = DENSE_TINY if name == "densenet121" else {"widths": TINY_WIDTHS}
    return create_encoder(name, **extra, **kw).eval()


def inputs(name: str) -> list[torch.Tensor]:
    image = torch.randn(2, 1, 64, 64)
    return [image] if name == "densenet121" else [image, torch.randn(1, 1, 16, 32, 32)]


@pytest.mark.parametrize("name", list_encoders())
def test_feature_info_matches_the_contract(name):
    enc = build(name)
    info = enc.feature_info
    assert isinstance(info, FeatureInfo)
    assert len(info) == 5
    assert info.channels() == list(enc.out_channels)
    assert info.reduction() == [r[-1] for r in enc.reductions]
    for module in info.module_name():
        enc.get_submodule(module)  # raises AttributeError for a name that is not a submodule


@pytest.mark.parametrize("name", NAMES)
def test_hooks_on_named_modules_see_the_returned_maps(name):
    """A forward hook on ``feature_info.module_name(i)`` captures exactly map ``i``, on images and volumes."""
    enc = build(name)
    seen: dict[str, torch.Tensor] = {}
    for x in inputs(name):
        seen.clear()
        handles = [enc.get_submodule(m).register_forward_hook(
            lambda _m, _i, out, key=m: seen.__setitem__(key, out.clone())) for m in enc.feature_info.module_name()]
        try:
            with torch.no_grad():
                maps = enc(x)
        finally:
            for h in handles:
                h.remove()
        for module, fmap in zip(enc.feature_info.module_name(), maps, strict=True):
            assert torch.equal(seen[module], fmap), (module, x.dim())


@pytest.mark.parametrize("name", NAMES)
def test_out_indices_select_maps(name):
    full, part = build(name), build(name, out_indices=(1, 3))
    part.load_state_dict(full.state_dict())
    x = inputs(name)[0]
    with torch.no_grad():
        all_maps, some = full(x), part(x)
    assert len(some) == 2
    assert torch.equal(some[0], all_maps[1])
    assert torch.equal(some[1], all_maps[3])
    assert part.out_channels == (full.out_channels[1], full.out_channels[3])
    assert part.reductions == (full.reductions[1], full.reductions[3])
    assert part.feature_dim == full.out_channels[3]
    assert part.feature_info.channels() == [full.out_channels[1], full.out_channels[3]]
    assert part.feature_info.channels(4) == full.out_channels[4]  # an explicit idx ignores the selection
    assert part.feature_info.out_indices == (1, 3)


@pytest.mark.parametrize("name", NAMES)
def test_stages_after_the_last_index_do_not_run(name):
    enc = build(name, out_indices=(0, 1, 2))
    last = enc.get_submodule(enc.feature_info.module_name(4))
    calls = []
    handle = last.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        enc(inputs(name)[0])
    handle.remove()
    assert calls == []


def test_out_indices_forms_and_errors():
    assert build("resnet10", out_indices=(-1, 0)).feature_info.out_indices == (0, 4)
    assert build("resnet10", out_indices=2).feature_info.out_indices == (3, 4)  # timm: an int is a count
    for bad in [(5,), (1, 1), (), 0, 6, (0.5,)]:
        with pytest.raises(ValueError, match="out_indices"):
            build("resnet10", out_indices=bad)


def test_features_only_is_accepted_and_false_refused():
    assert len(build("resnet10", features_only=True)(torch.zeros(1, 1, 32, 32))) == 5
    with pytest.raises(ValueError, match="features_only"):
        build("resnet10", features_only=False)


def test_feature_info_queries():
    enc = build("resnet50", output_stride=8, out_indices=(2, 3, 4))
    info = enc.feature_info
    assert info.reduction() == [8, 8, 8]  # dilated: layer3/4 keep stride 8 (MedicalNet geometry)
    assert info.module_name() == ["layer2", "layer3", "layer4"]
    assert info.get_dicts(keys=["num_chs"]) == [{"num_chs": 64}, {"num_chs": 128}, {"num_chs": 256}]
    assert info.get_dicts(idx=0) == {"num_chs": 8, "reduction": 2, "module": "act"}
    assert info[1]["module"] == "layer1"
    assert info.channels([0, 1]) == [8, 32]


def test_model_configs_refuse_out_indices():
    """Task heads read all five maps, so a model config cannot select stages."""
    from medzoo import create_model
    from medzoo.config import ConfigError

    cfg = {"encoder": {"name": "resnet10", "widths": list(TINY_WIDTHS), "options": {"out_indices": [4]}},
           "tasks": {"cls": {"type": "classification", "level": "image", "labels": ["a", "b"]}}}
    with pytest.raises(ConfigError, match="out_indices"):
        create_model(cfg)
