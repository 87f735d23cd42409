"""setup.py: MONAI as a tested range (constraints.txt pins the environment the suite ran on), the `bundle` extra, and
the MONAI metadata schema shipped as package data."""

from __future__ import annotations

import fnmatch
import runpy
from importlib.metadata import version
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_kwargs():
    captured = {}
    patch = pytest.MonkeyPatch()
    patch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    try:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        patch.undo()
    return captured


def _requirement(reqs: list[str], name: str) -> Requirement:
    return next(r for r in map(Requirement, reqs) if r.name == name)


def test_monai_is_a_range_that_holds_the_installed_version(setup_kwargs):
    monai = _requirement(setup_kwargs["install_requires"], "monai")
    operators = sorted(s.operator for s in monai.specifier)
    assert operators == ["<", ">="]
    assert monai.specifier.contains(version("monai"))
    assert not monai.specifier.contains("1.4.0")  # below the oldest version the suite ran on (1.5.2)


def test_constraints_pin_the_exact_versions_installed_here():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    for name in ("monai", "fire", "jsonschema"):
        assert pins[name] == version(name), name
    assert version("torch").startswith(pins["torch"])


def test_bundle_extra_holds_what_running_and_checking_bundles_need(setup_kwargs):
    extras = setup_kwargs["extras_require"]
    assert sorted(Requirement(r).name for r in extras["bundle"]) == ["fire", "jsonschema"]
    assert {Requirement(r).name for r in extras["bundle"]} <= {Requirement(r).name for r in extras["dev"]}


def test_the_metadata_schema_is_package_data(setup_kwargs):
    from medzoo.zoo.bundle import schema_file

    rel = schema_file().relative_to(ROOT / "medzoo").as_posix()
    assert any(fnmatch.fnmatch(rel, pattern) for pattern in setup_kwargs["package_data"]["medzoo"])
    assert schema_file().is_file()
