"""WeightsSpec validation (round trip, errors naming entry and key), catalog files (errors naming file and line,
$MEDZOO_CATALOG and user catalogs, add_entry, relative paths) and the ``zoo list``/``zoo info`` CLI."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import yaml

from medzoo.zoo.catalog import (
    CatalogError,
    add_entry,
    get_entry,
    list_entries,
    load_catalog,
    read_catalog_file,
)
from medzoo.zoo.spec import SpecError, WeightsSpec
from tests.zoo.catalog_kit import CATALOG, RAW, UNPINNED

GOOD = {"name": "tiny.covid", "version": "0.1", "architecture": {"encoder": "resnet10", "widths": [8, 16, 32, 64]},
        "parts": ["encoder", "heads"],
        "tasks": {"covid": {"type": "classification", "labels": ["normal", "pneumonia", "covid"], "level": "series"},
                  "findings": {"type": "multilabel", "labels": ["a", "b"], "level": "image",
                               "thresholds": {"a": 0.3, "b": 0.6}},
                  "severity": {"type": "regression", "labels": ["geographic", "opacity"], "level": "image",
                               "ranges": {"geographic": [0, 8], "opacity": [0, 6]}}},
        "preprocessing": {"modality": "CT", "normalisation": "window", "intensity_window": [-1000, 400],
                          "spacing": [1.5, 1.5, 1.5], "orientation": "RAS", "input_size": [32, 64, 64]},
        "files": [{"url": "https://example.org/w.safetensors", "mirrors": ["file:///m/w.safetensors"],
                   "sha256": "ab" * 32, "size": 10, "format": "safetensors", "part": "all"}],
        "metrics": {"covid": {"dataset": "COVIDx-CT", "auroc": 0.9}}, "license": "Apache-2.0",
        "source": "https://example.org", "citation": "us", "versions": {"medzoo": "0.1.0", "torch": "2.13.0"}}


def test_good_spec_round_trips():
    spec = WeightsSpec.from_dict(GOOD)
    assert spec.to_dict()["tasks"]["severity"]["ranges"] == {"geographic": [0.0, 8.0], "opacity": [0.0, 6.0]}
    assert WeightsSpec.from_dict(spec.to_dict()) == spec
    assert spec.pinned
    assert spec.size == 10
    assert spec.tasks["covid"].labels == ("normal", "pneumonia", "covid")


def _with(path: str, value):
    d = copy.deepcopy(GOOD)
    *head, last = path.split(".")
    node = d
    for k in head:
        node = node[int(k)] if k.isdigit() else node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return d


@pytest.mark.parametrize("path,value,key,text", [
    ("files.0.sha256", "AB" * 32, "files[0].sha256", "64 lowercase hex"),
    ("files.0.sha256", "ab" * 20, "files[0].sha256", "64 lowercase hex"),
    ("files.0.size", None, "files[0].size", "pinned file"),
    ("files.0.url", "ftp://example.org/w", "files[0].url", "unsupported url scheme"),
    ("files.0.mirrors", ["s3://bucket/w"], "files[0].mirrors[0]", "unsupported url scheme"),
    ("files.0.format", "pickle", "files[0].format", "expected one of"),
    ("tasks.findings.thresholds", KeyError, "tasks.findings.thresholds", "one threshold per label"),
    ("tasks.findings.thresholds", {"a": 0.3}, "tasks.findings.thresholds", "missing required key(s) ['b']"),
    ("tasks.findings.thresholds", {"a": 0.3, "b": 1.5}, "tasks.findings.thresholds", "(0, 1)"),
    ("tasks.covid.labels", ["only"], "tasks.covid.labels", ">= 2"),
    ("tasks.covid.level", "patient", "tasks.covid.level", "expected one of"),
    ("tasks.severity.thresholds", {"opacity": 0.5}, "tasks.severity.thresholds", "regression"),
    ("tasks.covid.ranges", {"covid": [0, 1]}, "tasks.covid.ranges", "only regression"),
    ("architecture.output_stride", 4, "architecture.output_stride", "expected one of"),
    ("architecture.shortcut", "C", "architecture.shortcut", "expected one of"),
    ("architecture.widths", [8, 16], "architecture.widths", "4 items"),
    ("preprocessing.intensity_window", KeyError, "preprocessing.intensity_window", "needs an intensity_window"),
    ("parts", ["encoder", "heads.nope"], "parts[1]", "heads.<task>"),
    ("version", 1.0, "version", "quote numbers"),
    ("version", "../../etc", "version", "expected a version"),
    ("files.0.filename", "..", "files[0].filename", "file name"),
    ("name", "Tiny Covid", "name", "lowercase dotted"),
    ("license", KeyError, "<root>", "missing required key(s) ['license']"),
    ("colour", "blue", "<root>", "unknown key(s) ['colour']"),
])
def test_invalid_specs_name_entry_and_key(path, value, key, text):
    with pytest.raises(SpecError) as err:
        WeightsSpec.from_dict(_with(path, value), where="cat.yaml:7: entry 0")
    msg = str(err.value)
    assert msg.startswith("cat.yaml:7: entry 0") and f"key {key!r}" in msg and text in msg, msg


def _write(path: Path, entries: list[dict], head: str = "") -> Path:
    path.write_text(head + yaml.safe_dump({"schema": 1, "entries": entries}, sort_keys=False))
    return path


def test_catalog_file_errors_name_file_and_line(tmp_path):
    bad = _with("files.0.sha256", "xyz")
    path = _write(tmp_path / "c.yaml", [GOOD, bad])
    text = path.read_text().splitlines()
    line = [i for i, t in enumerate(text, 1) if t.startswith("- name")][1]
    with pytest.raises(CatalogError, match=rf"c\.yaml:{line}: entry 1 .*files\[0\]\.sha256"):
        read_catalog_file(path)
    _write(path, [GOOD, GOOD])
    with pytest.raises(CatalogError, match="duplicate entry name 'tiny.covid'"):
        read_catalog_file(path)
    path.write_text("entries: [unclosed")
    with pytest.raises(CatalogError, match="not valid YAML"):
        read_catalog_file(path)


def test_get_entry_unknown_suggests_close_names():
    with pytest.raises(KeyError, match="Did you mean 'resnet50.medicalnet23'"):
        get_entry("resnet50.medicalnet32", catalog=CATALOG)


def test_env_catalog_and_user_catalogs(tmp_path, medzoo_home, monkeypatch, caplog):
    base = _write(tmp_path / "base.yaml", [GOOD])
    monkeypatch.setenv("MEDZOO_CATALOG", str(base))
    assert list_entries() == ["tiny.covid"]
    (medzoo_home / "catalogs").mkdir(parents=True)
    other = dict(copy.deepcopy(GOOD), name="user.model")
    _write(medzoo_home / "catalogs" / "mine.yaml", [other, dict(copy.deepcopy(GOOD), version="9")])
    assert list_entries() == ["tiny.covid", "user.model"]
    assert get_entry("tiny.covid").version == "9"
    assert "replaces" in caplog.text
    monkeypatch.setenv("MEDZOO_CATALOG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml \(from \$MEDZOO_CATALOG\)"):
        load_catalog()


def test_add_entry_appends_keeps_comments_and_refuses_duplicates(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG.read_text())
    spec = WeightsSpec.from_dict(GOOD)
    add_entry(path, spec)
    text = path.read_text()
    assert text.startswith(CATALOG.read_text()), "existing text and comments are kept"
    cat = read_catalog_file(path)
    assert list(cat)[-1] == "tiny.covid"
    assert cat["tiny.covid"] == spec
    assert len(cat) == len(RAW) + 1
    with pytest.raises(ValueError, match="exists"):
        add_entry(path, spec)
    changed = WeightsSpec.from_dict(dict(copy.deepcopy(GOOD), version="0.2"))
    add_entry(path, changed, replace=True)
    cat = read_catalog_file(path)
    assert cat["tiny.covid"].version == "0.2"
    assert len(cat) == len(RAW) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.yaml", "catalog.yaml.lock"]


def test_relative_paths_are_relative_to_the_catalog(tmp_path, medzoo_home):
    from medzoo.zoo.download import download

    data = b"weights" * 100
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "w.safetensors").write_bytes(data)
    entry = copy.deepcopy(GOOD)
    entry["files"] = [{"url": "w.safetensors", "mirrors": ["https://example.org/w"], "format": "safetensors",
                       "sha256": __import__("hashlib").sha256(data).hexdigest(), "size": len(data)}]
    path = _write(tmp_path / "zoo" / "catalog.yaml", [entry])
    spec = read_catalog_file(path)["tiny.covid"]
    assert spec.files[0].url == str(tmp_path / "zoo" / "w.safetensors")
    assert spec.files[0].mirrors == ("https://example.org/w",)
    assert download(spec, progress=False).read_bytes() == data
    add_entry(path, WeightsSpec.from_dict(dict(copy.deepcopy(GOOD), name="tiny.two")))
    assert yaml.safe_load(path.read_text())["entries"][0]["files"][0]["url"] == "w.safetensors"


def test_architecture_accepts_the_encoder_report():
    encoders = pytest.importorskip("medzoo.encoders")
    arch = encoders.create_encoder("resnet50", output_stride=8, widths=(8, 16, 32, 64)).architecture()
    spec = WeightsSpec.from_dict(dict(copy.deepcopy(GOOD), architecture=arch))
    a = spec.architecture
    assert (a.encoder, a.depth, a.block, a.layers, a.widths, a.shortcut, a.output_stride) == (
        "resnet50", 50, "bottleneck", (3, 4, 6, 3), (8, 16, 32, 64), "B", 8)
    with pytest.raises(SpecError, match="num_classes"):
        WeightsSpec.from_dict(_with("tasks.covid.num_classes", 2))


def test_add_entry_creates_a_new_catalog(tmp_path):
    path = tmp_path / "sub" / "new.yaml"
    spec = WeightsSpec.from_dict(GOOD)
    add_entry(path, spec)
    add_entry(path, WeightsSpec.from_dict(dict(copy.deepcopy(GOOD), name="tiny.two")))
    assert list(read_catalog_file(path)) == ["tiny.covid", "tiny.two"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# mine\nschema: 1\nentries: []\n")
    add_entry(empty, spec)
    assert list(read_catalog_file(empty)) == ["tiny.covid"]


def _cli(argv: list[str]) -> int:
    from medzoo.cli import zoo_cmd

    parser = argparse.ArgumentParser()
    zoo_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_and_info(capsys, medzoo_home):
    assert _cli(["list", "resnet1*", "--catalog", str(CATALOG)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("resnet1") and "." in line]
    assert {r[0] for r in rows} == {"resnet10.medicalnet8", "resnet10.medicalnet23", "resnet18.medicalnet8",
                                    "resnet18.medicalnet23", "resnet101.medicalnet8", "resnet152.medicalnet8"}
    sizes = {e["name"]: e["files"][0]["size"] for e in RAW}
    for r in rows:
        assert (r[1], r[2], r[4]) == (r[0].split(".")[0], "encoder", "yes")
        assert r[5:] == [f"{sizes[r[0]] / 1e6:.1f}", "MB"]
    assert _cli(["info", "resnet34.medicalnet23", "--catalog", str(CATALOG)]) == 0
    out = capsys.readouterr().out
    body = yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("#")))
    assert WeightsSpec.from_dict(body) == get_entry("resnet34.medicalnet23", catalog=CATALOG)
    assert "not cached" in out
    assert "--allow-unpinned" not in out
    assert _cli(["info", "densenet121-res224-nih", "--catalog", str(UNPINNED)]) == 0
    assert "--allow-unpinned" in capsys.readouterr().out


def test_cli_list_shows_recorded_pins(capsys, medzoo_home):
    import json

    url = get_entry("densenet121-res224-nih", catalog=UNPINNED).files[0].url
    medzoo_home.mkdir(parents=True)
    (medzoo_home / "pins.json").write_text(json.dumps({url: {"sha256": "ab" * 32, "size": 28_400_000}}))
    assert _cli(["list", "densenet121-*", "--catalog", str(UNPINNED)]) == 0
    rows = {r.split()[0]: r.split() for r in capsys.readouterr().out.splitlines() if r.startswith("densenet121-")}
    assert rows["densenet121-res224-nih"][4:] == ["recorded", "28.4", "MB"]
    assert rows["densenet121-res224-chex"][4:] == ["no", "?"]
