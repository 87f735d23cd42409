"""Lint of the shipped catalogs (weights/catalog.yaml and catalog-unpinned.yaml): every shipped entry is pinned,
every entry passes the schema and the task-meta lint, names are unique and complete, the MedicalNet, TorchXRayVision
and ImageNet entries match their upstream releases, and README.md and docs/PREPROCESSING.md list every entry."""

from __future__ import annotations

import copy
import re
from urllib.parse import urlparse

import pytest

from medzoo.data.presets import medicalnet_contract
from medzoo.zoo.catalog import default_catalog_path, get_entry, list_entries
from medzoo.zoo.spec import WeightsSpec
from tests.zoo.catalog_kit import CATALOG, RAW, RAW_UNPINNED

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
