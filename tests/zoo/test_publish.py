"""publish: an export directory becomes a catalog entry; loading it by name gives the exact exported model."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from medzoo.cli import export_cmd
from medzoo.models import create_model
from medzoo.zoo.catalog import get_entry, read_catalog_file
from medzoo.zoo.download import IntegrityError
from medzoo.zoo.export import sha256_file
from medzoo.zoo.loading import load_pretrained
from medzoo.zoo.publish import export_model, publish
from medzoo.zoo.resolver import load

W = [8, 16, 32, 64]
CFG = {"encoder": {"name": "resnet18", "widths": W},
       "tasks": {"cxr": {"type": "multilabel", "level": "image", "labels": ["effusion", "nodule"],
                         "thresholds": [0.4, 0.6]},
                 "seg": {"type": "segmentation", "level": "image", "labels": ["bg", "lung"],
                         "decoder_channels": [32, 16, 8, 8, 8]}}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(3)
    model = create_model(CFG).eval()
    root = tmp_path_factory.mktemp("pub")
    return model, export_model(model, root / "exp", name="tiny.cxr", license="CC-BY-4.0", version="2.1")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    export_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _same(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_publish_file_url_then_load_by_name_is_exact(exported, tmp_path, medzoo_home):
    model, exp = exported
    catalog = tmp_path / "catalog.yaml"
    spec = publish(exp, "tiny.cxr", exp.as_uri() + "/", catalog=catalog)
    files = {f.name: f for f in spec.files}
    assert files["model.safetensors"].sha256 == sha256_file(exp / "model.safetensors")
    assert files["model.safetensors"].size == (exp / "model.safetensors").stat().st_size
    assert files["config.yaml"].sha256 == sha256_file(exp / "config.yaml")
    assert files["config.yaml"].part == "config"
    assert read_catalog_file(catalog)["tiny.cxr"] == spec == get_entry("tiny.cxr", catalog=catalog)
    assert spec.version == "2.1"
    assert spec.license == "CC-BY-4.0"
    loaded, _ = load("tiny.cxr", catalog=catalog)
    _same(model, loaded)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    assert all(torch.equal(want[t], got[t]) for t in want)
    torch.testing.assert_close(loaded.heads["cxr"].thresholds, torch.tensor([0.4, 0.6]))
    assert loaded.load_report.ok
    assert (medzoo_home / "weights" / "tiny.cxr" / "2.1" / "model.safetensors").is_file()


def test_publish_http_url_downloads_and_verifies(exported, tmp_path, http_server, medzoo_home):
    model, exp = exported
    for name in ("model.safetensors", "config.yaml"):
        http_server.add(name, (exp / name).read_bytes())
    catalog = tmp_path / "catalog.yaml"
    publish(exp, "tiny.cxr", http_server.url(""), catalog=catalog)
    loaded, _ = load("zoo:tiny.cxr", catalog=catalog)
    _same(model, loaded)
    assert http_server.count("model.safetensors") == 1
    assert http_server.count("config.yaml") == 1
    load("tiny.cxr", catalog=catalog)  # a cache hit: nothing fetched again
    assert http_server.count("model.safetensors") == 1
    # a server that now serves other bytes of the same size: the cache is fine, a fresh cache refuses them
    data = bytearray((exp / "model.safetensors").read_bytes())
    data[-1] ^= 1
    http_server.add("model.safetensors", bytes(data))
    with pytest.raises(IntegrityError, match="expected sha256"):
        load("tiny.cxr", catalog=catalog, cache_dir=tmp_path / "fresh")


def test_publish_refuses_a_changed_export_and_duplicate_names(exported, tmp_path):
    _, exp = exported
    copy = shutil.copytree(exp, tmp_path / "changed")
    meta = json.loads((copy / "metadata.json").read_text())
    meta["files"][0]["sha256"] = "0" * 64
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="differs from"):
        publish(copy, "tiny.changed", "https://example.org/zoo/", catalog=tmp_path / "c.yaml")
    publish(exp, "tiny.cxr", "https://example.org/zoo/", catalog=tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="exists"):
        publish(exp, "tiny.cxr", "https://example.org/zoo/", catalog=tmp_path / "c.yaml")
    with pytest.raises(FileNotFoundError, match="not an export directory"):
        publish(tmp_path, "tiny.none", "https://example.org/zoo/", catalog=tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="name"):
        publish(exp, "Not A Name", "https://example.org/zoo/", catalog=tmp_path / "c.yaml")


def test_publish_default_catalog_is_read_by_lookups(exported, medzoo_home):
    model, exp = exported
    publish(exp, "tiny.default", exp.as_uri())
    assert (medzoo_home / "catalogs" / "published.yaml").is_file()
    _same(model, load("tiny.default")[0])


def test_publish_cli(exported, tmp_path, capsys, medzoo_home):
    _, exp = exported
    catalog = tmp_path / "cli.yaml"
    assert _cli(["publish", str(exp), "--name", "tiny.cli", "--url", "https://example.org/z/",
                 "--catalog", str(catalog), "--mirror", "https://mirror.example.org/z"]) == 0
    out = capsys.readouterr().out
    assert "tiny.cli" in out
    assert sha256_file(exp / "model.safetensors") in out
    spec = get_entry("tiny.cli", catalog=catalog)
    assert spec.files[0].url == "https://example.org/z/model.safetensors"
    assert spec.files[0].mirrors == ("https://mirror.example.org/z/model.safetensors",)


def test_cli_reexports_an_export_dir_as_encoder_only(exported, tmp_path, capsys):
    model, exp = exported
    assert _cli(["export", str(exp), "--out", str(tmp_path / "enc"), "--parts", "encoder"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    meta = json.loads((tmp_path / "enc" / "metadata.json").read_text())
    assert meta["parts"] == ["encoder"]
    assert meta["tasks"] == {}
    assert meta["license"] == "CC-BY-4.0"
    assert meta["version"] == "2.1"
    assert meta["name"] == "enc"
    from safetensors.torch import load_file

    assert sorted(load_file(str(tmp_path / "enc" / "model.safetensors"))) == sorted(model.encoder.state_dict())
    target = create_model({"encoder": {"name": "resnet18", "widths": W}, "tasks": {}})
    report = load_pretrained(target, tmp_path / "enc")
    assert report.ok
    assert len(report.loaded) == len(model.encoder.state_dict())
    _same(model.encoder, target.encoder)
