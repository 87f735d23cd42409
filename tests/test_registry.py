"""The one Registry: duplicates raise, unknown names list close and valid options."""

from __future__ import annotations

import pytest

from medzoo.registry import Registry


def test_register_get_list_and_natural_order():
    reg = Registry("thing")
    for name in ("net101", "net18", "net2"):
        reg.register(name)(lambda name=name: name)
    assert reg.list() == ["net2", "net18", "net101"]
    assert reg.list("net1*") == ["net18", "net101"]
    assert reg.get("net18")() == "net18"
    assert "net2" in reg
    assert len(reg) == 3


def test_duplicate_raises():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a")(lambda: 2)


def test_unknown_lists_close_and_valid_names():
    reg = Registry("encoder")
    for name in ("resnet18", "resnet50"):
        reg.register(name)(lambda: None)
    with pytest.raises(KeyError) as err:
        reg.get("resnet81")
    msg = err.value.args[0]
    assert "unknown encoder 'resnet81'" in msg
    assert "Did you mean 'resnet18'" in msg
    assert "resnet18, resnet50" in msg
