"""Schema lint of weights/catalog.yaml, WeightsSpec validation, catalog loading and add_entry, list/info CLI."""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from medzoo.data.presets import medicalnet_contract
from medzoo.zoo.catalog import (
    CatalogError,
    add_entry,
    default_catalog_path,
    get_entry,
    list_entries,
    load_catalog,
    read_catalog_file,
)
from medzoo.zoo.spec import SpecError, WeightsSpec

CATALOG = Path(__file__).resolve().parents[2] / "weights" / "catalog.yaml"
UNPINNED = CATALOG.with_name("catalog-unpinned.yaml")
RAW = yaml.safe_load(CATALOG.read_text())["entries"]
RAW_UNPINNED = yaml.safe_load(UNPINNED.read_text())["entries"]
# Independent copy of the MedicalNet release table (the Hugging Face listing): depth -> (shortcut, HF size).
MEDICALNET = {10: ("B", "57.5 MB"), 18: ("A", "132 MB"), 34: ("A", "253 MB"), 50: ("B", "185 MB"),
              101: ("B", "341 MB"), 152: ("B", "470 MB"), 200: ("B", "507 MB")}
# The Git LFS pointers on record for the Hugging Face MedicalNet files: name -> (repository depth, commit, sha256 head).
MEDICALNET_PINS = {
    "resnet10.medicalnet8": (10, "923db3dc91baf34c4fe10246651c7fe4dc675fee", "2824951e"),
    "resnet10.medicalnet23": (10, "4a4b0ef72be0ddf85a2c0720e0a4855c8ac0f0a8", "afa8055f"),
    "resnet18.medicalnet8": (18, "ee59c99e39a995fb8c20f2a2650a66161e2df584", "38b3a174"),
    "resnet18.medicalnet23": (10, "3d5811d0e3943472fffedf90a4ca4f6fdb948e33", "61224f93"),
    "resnet34.medicalnet8": (34, "f903bf04dc54c16f6ab0014ff6b770c791255a9c", "977a1be7"),
    "resnet34.medicalnet23": (34, "38043c1af39ac39e70de7c92a4af8013eb275b31", "3ea7188e"),
    "resnet50.medicalnet8": (50, "02061bf3be4aefd33724688f16dbcc058cdf1f13", "5b6189ca"),
    "resnet50.medicalnet23": (50, "7cd767ef5bbc0bf26e691b04bc0d25df6d3cbc4b", "ff48a622"),
    "resnet101.medicalnet8": (101, "7609a48246ec6bdd4ed2d2ad4f48fac05978ba67", "a26bbcf9"),
    "resnet152.medicalnet8": (152, "a040da51a0d8e8b3dc38aa0cb3dc7c445aa29ca9", "e96c459f"),
    "resnet200.medicalnet8": (200, "564abfd761968bff3cec61bdbc05cc75c33ec5d3", "df58525b"),
}
TXV = {f"densenet121-res224-{k}" for k in ("all", "nih", "pc", "chex", "rsna", "mimic_nb", "mimic_ch")}
TXV |= {"resnet50-res512-all"}
IMAGENET = {f"resnet{d}.imagenet1k-v1" for d in (18, 34, 50, 101, 152)}
# Mandatory keys per task type (torchvision-style meta lint).
TASK_REQUIRED = {"classification": {"labels", "level"}, "multilabel": {"labels", "level", "thresholds"},
                 "regression": {"labels", "level"}, "segmentation": {"labels", "level"}}
ENTRY_REQUIRED = {"name", "version", "architecture", "parts", "files", "license", "source", "citation",
                  "preprocessing"}


def test_default_catalog_path_is_the_repository_file():
    assert default_catalog_path().resolve() == CATALOG  # through the package's link medzoo/weights


def shipped_pin_problems(raw: dict) -> list[str]:
    """Why a shipped entry is not pinned: every file needs its sha256, its exact size, a source for both in the
    notes, and (on Hugging Face) a URL fixed to a 40-hex commit."""
    problems = []
    for f in raw["files"]:
        if f.get("sha256") is None or not isinstance(f.get("size"), int):
            problems.append(f"{f['url']}: shipped entries need sha256 and size")
        if "huggingface.co" in f["url"] and not re.search(r"/resolve/[0-9a-f]{40}/", f["url"]):
            problems.append(f"{f['url']}: not fixed to a commit")
    if "https://" not in (raw.get("notes") or "") or "Pinned:" not in (raw.get("notes") or ""):
        problems.append("notes must say where the pin comes from")
    return problems


@pytest.mark.parametrize("raw", RAW, ids=[e.get("name", "?") for e in RAW])
def test_shipped_entries_are_pinned(raw):
    assert shipped_pin_problems(raw) == []


@pytest.mark.parametrize("edit", [("sha256", None), ("size", None), ("url", "https://huggingface.co/a/b/resolve/main/w")])
def test_the_pin_lint_fails_on_an_unpinned_entry(edit):
    raw = copy.deepcopy(RAW[0])
    raw["files"][0][edit[0]] = edit[1]
    assert shipped_pin_problems(raw) != []


@pytest.mark.parametrize("raw", RAW + RAW_UNPINNED, ids=[e.get("name", "?") for e in RAW + RAW_UNPINNED])
def test_catalog_entry_lint(raw):
    assert ENTRY_REQUIRED <= set(raw), f"missing {ENTRY_REQUIRED - set(raw)}"
    spec = WeightsSpec.from_dict(raw, where=f"{CATALOG} ({raw['name']})")
    assert WeightsSpec.from_dict(spec.to_dict()) == spec
    for name, task in (raw.get("tasks") or {}).items():
        assert TASK_REQUIRED[task["type"]] <= set(task), f"task {name}: missing {TASK_REQUIRED[task['type']]}"
        if task.get("thresholds"):
            assert set(task["thresholds"]) <= set(task["labels"])
    for f in raw["files"]:
        for src in [f["url"], *f.get("mirrors", [])]:
            assert urlparse(src).scheme in ("https", "http", "file"), src
        if f["sha256"] is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", f["sha256"])
            assert isinstance(f["size"], int)
            assert f["size"] > 0
        elif f.get("sha256_prefix"):
            assert "prefix-pinned" in raw.get("notes", "").lower(), "a prefix-pinned entry says so in its notes"
        else:
            assert "unpinned" in raw.get("notes", "").lower(), "an unpinned entry says so in its notes"


def test_catalog_names_unique_and_complete():
    names = [e["name"] for e in RAW]
    extra = [e["name"] for e in RAW_UNPINNED]
    assert len(names) == len(set(names)) == 17
    assert len(extra) == len(set(extra)) == 7
    medicalnet = {f"resnet{d}.medicalnet8" for d in MEDICALNET} | {f"resnet{d}.medicalnet23" for d in (10, 18, 34, 50)}
    assert set(names) | set(extra) == medicalnet | IMAGENET | TXV
    assert set(names) == set(list_entries(catalog=CATALOG))
    assert not set(names) & set(extra)


def test_unpinned_catalog_holds_only_entries_without_a_full_hash():
    for raw in RAW_UNPINNED:
        assert all(f["sha256"] is None for f in raw["files"]), raw["name"]


@pytest.mark.parametrize("name", sorted(MEDICALNET_PINS))
def test_medicalnet_entries_match_the_release(name):
    spec = get_entry(name, catalog=CATALOG)
    depth, variant = re.fullmatch(r"resnet(\d+)\.medicalnet(8|23)", name).groups()
    shortcut, hf_size = MEDICALNET[int(depth)]
    fname = f"resnet_{depth}.pth" if variant == "8" else f"resnet_{depth}_23dataset.pth"
    repo, commit, sha_head = MEDICALNET_PINS[name]
    (f,) = spec.files
    assert f.url == f"https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{repo}/resolve/{commit}/{fname}"
    assert (f.format, f.part, f.name) == ("medicalnet-pth", "encoder", fname)
    assert f.sha256.startswith(sha_head)
    assert f"{f.size / 1e6:.3g} MB" == hf_size  # the exact size rounds to the Hugging Face listing
    assert commit in spec.notes
    assert str(f.size) in spec.notes
    a = spec.architecture
    assert (a.encoder, a.output_stride, a.in_channels, a.shortcut) == (f"resnet{depth}", 8, 1, shortcut)
    assert spec.parts == ("encoder",)
    assert spec.tasks == {}
    assert spec.license == "MIT"
    assert "Med3D" in spec.citation
    assert "2019" in spec.citation
    assert spec.preprocessing == {"volume": medicalnet_contract()}  # MedicalNet's own steps, axes DHW


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


def test_txv_entries_carry_torchxrayvisions_labels_and_thresholds():
    from medzoo.zoo.txv import TXV_WEIGHTS

    for raw in RAW + RAW_UNPINNED:
        if raw["name"] not in TXV:
            continue
        e = TXV_WEIGHTS[raw["name"]]
        kept = [i for i, (n, t) in enumerate(zip(e["labels"], e["op_threshs"])) if n and t == t]
        task = raw["tasks"]["findings"]
        assert task["labels"] == [e["labels"][i] for i in kept], raw["name"]
        assert task["thresholds"] == {e["labels"][i]: e["op_threshs"][i] for i in kept}, raw["name"]
        assert raw["preprocessing"]["image"]["value_range"] == [-1024, 1024]
        assert raw["preprocessing"]["image"]["crop"] == "square"  # XRayCenterCrop


def test_imagenet_entries_carry_torchvisions_prefix_and_architecture():
    for raw in RAW + RAW_UNPINNED:
        if raw["name"] not in IMAGENET:
            continue
        (f,) = raw["files"]
        prefix = re.fullmatch(r"https://download\.pytorch\.org/models/resnet\d+-([0-9a-f]{8})\.pth", f["url"]).group(1)
        assert f["sha256_prefix"] == prefix
        assert (raw["architecture"]["shortcut"], raw["architecture"]["bias_downsample"]) == ("B", False)
        assert raw["preprocessing"]["image"]["normalisation"] == "meanstd"


def test_readme_table_lists_every_entry_with_its_pin_status():
    readme = (CATALOG.parents[1] / "README.md").read_text()
    for raw, where in [(e, "shipped") for e in RAW] + [(e, "opt-in") for e in RAW_UNPINNED]:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{raw['name']}` | {where} |")), None)
        assert row is not None, f"README catalog table lacks {raw['name']} ({where})"
        f = raw["files"][0]
        status = "yes (sha256 + size)" if f["sha256"] else ("prefix" if f.get("sha256_prefix") else "no:")
        assert status in row, row
        assert f"| {raw['license']} |" in row, row


def test_preprocessing_doc_lists_every_entrys_contract():
    """docs/PREPROCESSING.md's table row of each entry states its kind, axes, size and channels as the catalog does."""
    doc = (CATALOG.parents[1] / "docs" / "PREPROCESSING.md").read_text()
    for raw, where in [(e, "shipped") for e in RAW] + [(e, "opt-in") for e in RAW_UNPINNED]:
        ((kind, c),) = raw["preprocessing"].items()
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{raw['name']}` | {where} |")), None)
        assert row is not None, f"docs/PREPROCESSING.md lacks {raw['name']}"
        cells = [x.strip() for x in row.strip("|").split("|")]
        assert cells[2:4] == [kind, c["axes"]], raw["name"]
        assert "x".join(map(str, c["input_size"])) in cells[7], raw["name"]
        assert cells[8] == str(c["channels"]), raw["name"]
