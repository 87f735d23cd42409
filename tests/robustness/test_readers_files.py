"""Dataset readers beyond one mutated listing line: each attack gives records or a DatasetFormatError naming the
file (and the line, where there is one); never another exception type, never a file dropped unreported.

- MSD ``dataset.json``: a key (``training``, ``labels``, an entry's ``image`` ...) replaced by random JSON;
- Montgomery / Shenzhen: random image file names in ``CXR_png``, each read or reported as skipped;
- regressions: a non-UTF-8 header line, a corrupt ``.csv.gz``, MSD ``labels`` not an object, JSON nested 100,000
  deep, an empty header-less listing, a listed path that is a folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from medzoo.data import open_dataset
from medzoo.data.manifest import DatasetFormatError, Manifest
from tests.robustness.readers_kit import CATEGORY, TARGETS, Target
from tests.robustness.readers_kit import check_error as _check_error
from tests.robustness.readers_kit import listing_of as _listing
from tests.robustness.readers_kit import open_reader as _open
from tests.robustness.readers_kit import reader_root as _root
from tests.robustness.tally import case

JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) |
                    st.text(max_size=8) | st.sampled_from(["./imagesTr/lung_000.nii.gz", "../../x.nii.gz", "/etc/x"]),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=8)
MSD_KEYS = ["training", "test", "labels", "numTraining", "training.0", "training.0.image", "training.0.label",
            "test.0", "modality", "<root>"]


def _set(data: dict, key: str, value: object) -> object:
    if key == "<root>":
        return value
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


@given(key=st.sampled_from(MSD_KEYS), value=JSON)
def test_msd_json_fuzz(key: str, value: object, corpus: dict[str, Path]) -> None:
    path = corpus["msd"] / "dataset.json"
    original = path.read_bytes()
    data = _set(json.loads(original), key, value)
    with case(CATEGORY, "msd: dataset.json keys replaced by random JSON"):
        try:
            path.write_text(json.dumps(data))
            for mode in ("raise", "skip"):
                out = _open(Target("msd", "msd", "dataset.json", ",", 0, 0), corpus["msd"], mode)
                if isinstance(out, DatasetFormatError):
                    _check_error(out, corpus["msd"])
        finally:
            path.write_bytes(original)


NAME = st.one_of(st.from_regex(r"[A-Za-z0-9_ .()-]{1,16}\.png", fullmatch=True),
                 st.sampled_from(["MCUCXR_0099_2.png", "CHNCXR_0099_1.PNG", "MCUCXR_99_1.png", "CHNCXR_0099_1.png",
                                  "MCUCXR_0099_1.png", ".hidden.png", "x.png", "CHNCXR_0001_1 (copy).png"]))


@pytest.mark.parametrize("kind", ["montgomery", "shenzhen"])
@given(name=NAME)
def test_tb_folder_names(kind: str, name: str, corpus: dict[str, Path]) -> None:
    folder = corpus[kind] / "CXR_png"
    assume(not (folder / name).exists())
    src = next(p for p in sorted(folder.iterdir()) if p.suffix == ".png")
    with case(CATEGORY, f"{kind}: random image file names in CXR_png"):
        try:
            shutil.copy(src, folder / name)
            strict, lenient = _open(Target(kind, kind, "", "", 0, 0), corpus[kind], "raise"), None
            lenient = open_dataset(kind, corpus[kind], on_error="skip")
            if isinstance(strict, DatasetFormatError):
                _check_error(strict, corpus[kind])
            images = {os.path.basename(r.image) for r in lenient}
            skipped = {os.path.basename(s.path) for s in lenient.skipped}
            for f in os.listdir(folder):
                if f.startswith(".") or not f.lower().endswith(".png"):
                    continue
                assert f in images or f in skipped, f"{kind}: {f} neither read nor reported"
        finally:
            (folder / name).unlink(missing_ok=True)


@pytest.mark.parametrize("name", ["nih-cxr14/Data_Entry", "chexpert/train.csv", "csv/regression", "covid-severity"])
def test_non_utf8_header_is_an_error_naming_it(name: str, corpus: dict[str, Path]) -> None:
    """Regression: under on_error="skip" a header line that is not UTF-8 was dropped, and the first data row was
    taken as the header (an error about line 2's "columns", or worse)."""
    target = TARGETS[name]
    listing = _listing(target, corpus)
    original = listing.read_bytes()
    lines = original.split(b"\n")
    header = next(i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith(b"#"))
    lines[header] = b"\xff" + lines[header]
    with case(CATEGORY, "non-UTF-8 header line (regression)"):
        try:
            listing.write_bytes(b"\n".join(lines))
            for mode in ("raise", "skip"):
                with pytest.raises(DatasetFormatError) as info:
                    open_dataset(target.kind, _root(target, corpus), on_error=mode, **target.options)
                assert (info.value.path, info.value.line) == (str(listing), header + 1), info.value
                assert "UTF-8" in info.value.reason
        finally:
            listing.write_bytes(original)


def _expect_error(kind: str, root: Path, path: Path, line: int | None, what: str, **options: object) -> None:
    for mode in ("raise", "skip"):
        out = _open(Target(kind, kind, "", "", 0, 0, dict(options)), root, mode)
        if isinstance(out, Manifest):  # skip mode may list a file-level problem instead of raising
            assert mode == "skip" and any(s.path == str(path) and s.line == line for s in out.skipped), out.skipped
        else:
            assert (out.path, out.line) == (str(path), line), out
            assert what in out.reason, out


def test_corrupt_gzip_listing(corpus: dict[str, Path]) -> None:
    """Regression: a corrupt .csv.gz raised zlib.error instead of a DatasetFormatError."""
    path = corpus["mimic-cxr-jpg"] / "mimic-cxr-2.0.0-chexpert.csv.gz"
    original = path.read_bytes()
    with case(CATEGORY, "corrupt .csv.gz listing (regression)"):
        try:
            path.write_bytes(original[:20] + bytes(b ^ 0x55 for b in original[20:-10]) + original[-10:])
            _expect_error("mimic-cxr-jpg", corpus["mimic-cxr-jpg"], path, None, "cannot read file")
        finally:
            path.write_bytes(original)


@pytest.mark.parametrize("labels", [["background", "lung"], "lung", {"0": 1}])
def test_msd_labels_not_an_object(labels: object, corpus: dict[str, Path]) -> None:
    """Regression: ``"labels": [...]`` in dataset.json raised TypeError."""
    path = corpus["msd"] / "dataset.json"
    original = path.read_bytes()
    with case(CATEGORY, "msd: 'labels' not an object / JSON nested 100k deep (regression)"):
        try:
            path.write_text(json.dumps({**json.loads(original), "labels": labels}))
            _expect_error("msd", corpus["msd"], path, None, "'labels'")
        finally:
            path.write_bytes(original)


def test_msd_deeply_nested_json(corpus: dict[str, Path]) -> None:
    """Regression: JSON nested 100,000 deep raised RecursionError."""
    path = corpus["msd"] / "dataset.json"
    original = path.read_bytes()
    with case(CATEGORY, "msd: 'labels' not an object / JSON nested 100k deep (regression)"):
        try:
            path.write_text("[" * 100_000 + "]" * 100_000)
            _expect_error("msd", corpus["msd"], path, None, "nested")
        finally:
            path.write_bytes(original)


@pytest.mark.parametrize("name", ["covidx-cxr", "covidx-ct/slice", "medicalnet-list"])
@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_headerless_listing(name: str, content: bytes, corpus: dict[str, Path]) -> None:
    """Regression: an empty COVIDx / MedicalNet listing gave no records and no error."""
    target = TARGETS[name]
    listing = _listing(target, corpus)
    original = listing.read_bytes()
    with case(CATEGORY, "empty header-less listing (regression)"):
        try:
            listing.write_bytes(content)
            _expect_error(target.kind, _root(target, corpus), listing, None, "empty file", **target.options)
        finally:
            listing.write_bytes(original)


def test_listed_folder_is_not_an_image(corpus: dict[str, Path]) -> None:
    """Regression: a MedicalNet list line cut to 'Task99_SynthLung/imagesTr' became a record whose image is a folder."""
    listing = corpus["medicalnet-list"] / "medicalnet_train.txt"
    original = listing.read_bytes()
    with case(CATEGORY, "listed path is a folder (regression)"):
        try:
            lines = original.split(b"\n")
            lines[0] = b"Task99_SynthLung/imagesTr"
            listing.write_bytes(b"\n".join(lines))
            _expect_error("medicalnet-list", listing, listing, 1, "is a folder")
        finally:
            listing.write_bytes(original)
