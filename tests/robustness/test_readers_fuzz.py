"""Fuzzing every dataset reader: each mutated listing gives records or a DatasetFormatError naming file and line.

One hypothesis example mutates one line of a realistic listing (the tiny synthetic corpus, or the MIMIC / PadChest
fixtures): a dropped or extra field, a replaced field (unknown labels, numbers out of range, junk text), a ``..`` or
absolute path, non-UTF-8 bytes, a truncated or duplicated line, or an empty file. Then:

- ``on_error="raise"`` returns a manifest or raises :class:`DatasetFormatError` whose message names an existing
  file of the dataset (and a line inside it); never another exception type;
- ``on_error="skip"`` does the same, and when it returns, nothing is dropped silently: a record missing against
  the clean read means ``manifest.skipped`` lists something; a clean raise-mode read means no skips and the same
  records; a raise-mode error is the first skipped entry.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from medzoo.data import open_dataset
from medzoo.data.manifest import DatasetFormatError, Manifest
from tests.robustness.tally import case, outcome

CATEGORY = "readers"

JUNK = ["", " ", "nan", "NaN", "inf", "-inf", "1e999", "-1", "2", "-1.0", "1.0", "0", "9", "Bogus Finding",
        "No Finding|Mass", "['x'", "[1, 2]", "{'a'}", "../x.png", "..", ".", "/", "\x00", "ü", '"', "'", "|",
        "\U0001d518nicode", "a" * 300, "１２", "  1.0  ", "TRUE", "None"]
TEXT = st.one_of(st.sampled_from(JUNK), st.text(st.characters(blacklist_characters="\n\r",
                                                              blacklist_categories=("Cs",)), max_size=12))
BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xe2\x82", b"\x80abc", b"\xed\xa0\x80"]
OPS = ["drop_field", "add_field", "replace_field", "label", "escape", "absolute", "non_utf8", "truncate",
       "duplicate", "swap_delim", "empty_file", "header_only"]


@dataclass
class Target:
    """One listing file of one reader, and how its lines are laid out.

    ``options`` are the reader's keyword arguments. CheXpert, MIMIC-CXR and PadChest read ``views="*"``: by default
    they keep frontal views only, so a mutated (blank, junk) view cell would leave the image out by design, which
    the fuzzer could not tell from a silent drop. ``view_field`` is the view column of those listings.
    """

    kind: str
    root_key: str
    listing: str  # relative to the corpus root of ``root_key`` (or "" when the root is the listing itself)
    delim: str
    path_field: int
    label_field: int
    options: dict = field(default_factory=dict)
    view_field: int | None = None

ALL_VIEWS = {"views": "*"}


TARGETS = {
    "nih-cxr14/Data_Entry": Target("nih-cxr14", "nih-cxr14", "Data_Entry_2017_v2020.csv", ",", 0, 1),
    "nih-cxr14/BBox_List": Target("nih-cxr14", "nih-cxr14", "BBox_List_2017.csv", ",", 0, 1),
    "nih-cxr14/train_val_list": Target("nih-cxr14", "nih-cxr14", "train_val_list.txt", " ", 0, 0),
    "chexpert/train.csv": Target("chexpert", "chexpert", "train.csv", ",", 0, 6, ALL_VIEWS, view_field=4),
    "mimic-cxr-jpg/metadata": Target("mimic-cxr-jpg", "mimic-cxr-jpg", "mimic-cxr-2.0.0-metadata.csv", ",", 0, 4,
                                     ALL_VIEWS, view_field=4),
    "mimic-cxr-jpg/chexpert.csv.gz": Target("mimic-cxr-jpg", "mimic-cxr-jpg", "mimic-cxr-2.0.0-chexpert.csv.gz", ",",
                                            1, 3, ALL_VIEWS),
    "padchest": Target("padchest", "padchest", "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", ",", 0, 8,
                       ALL_VIEWS, view_field=6),
    "vindr-cxr/train.csv": Target("vindr-cxr", "vindr-cxr", "train.csv", ",", 0, 1),
    "covidx-cxr": Target("covidx-cxr", "covidx-cxr", "train_COVIDx9A.txt", " ", 1, 2),
    "covidx-ct/slice": Target("covidx-ct", "covidx-ct", "train_COVIDx_CT-3A.txt", " ", 0, 1),
    "covidx-ct/series": Target("covidx-ct", "covidx-ct", "train_COVIDx_CT-3A.txt", " ", 0, 1, {"level": "series"}),
    "covid-severity": Target("covid-severity", "covid-severity", "annotations/covid-severity-scores.csv", ",", 0, 1),
    "medicalnet-list": Target("medicalnet-list", "medicalnet-list", "medicalnet_train.txt", " ", 0, 1),
    "nifti-folder/csv": Target("nifti-folder", "nifti-folder", "", ",", 0, 1),
    "csv/regression": Target("csv", "severity-with-masks-csv", "", ",", 0, 3,
                             {"image_col": "path", "label_cols": ["geographic_mean", "opacity_mean"],
                              "task": "severity", "type": "regression", "patient_col": "patientid",
                              "mask_col": "mask"}),
}


def _root(target: Target, corpus: dict[str, Path]) -> Path:
    root = corpus[target.root_key]
    if target.kind == "medicalnet-list":
        return root / target.listing
    return root


def _listing(target: Target, corpus: dict[str, Path]) -> Path:
    root = corpus[target.root_key]
    return root / target.listing if target.listing else root


def _read_text_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _write_text_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _mutate_line(line: bytes, op: str, target: Target, text: str, pos: int, k: int) -> bytes:
    if op == "non_utf8":
        cut = pos % (len(line) + 1)
        return line[:cut] + BAD_BYTES[k % len(BAD_BYTES)] + line[cut:]
    if op == "truncate":
        return line[: max(1, pos % max(1, len(line)))]
    s = line.decode("utf-8")
    fields = s.split(target.delim)
    i = pos % len(fields)
    if op == "drop_field" and len(fields) > 1:
        del fields[i]
    elif op == "add_field":
        fields.insert(i, text)
    elif op == "replace_field":
        fields[i] = text
    elif op == "label":
        fields[min(target.label_field, len(fields) - 1)] = text
    elif op == "escape":
        j = min(target.path_field, len(fields) - 1)
        fields[j] = "../" * (1 + k % 4) + os.path.basename(fields[j] or "x.png")
    elif op == "absolute":
        j = min(target.path_field, len(fields) - 1)
        fields[j] = "/etc/" + os.path.basename(fields[j] or "x.png")
    elif op == "swap_delim":
        return s.replace(target.delim, ";" if k % 2 else "\t", 1).encode("utf-8")
    return target.delim.join(fields).encode("utf-8")


def _mutate(data: bytes, op: str, target: Target, line_pick: int, text: str, pos: int, k: int) -> tuple[bytes, int]:
    """The mutated file and the 1-based mutated line (0 for whole-file mutations)."""
    if op == "empty_file":
        return b"", 0
    lines = data.split(b"\n")
    body = [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith(b"#")]
    if op == "header_only":
        return b"\n".join(lines[: body[0] + 1]) + b"\n", 0
    idx = body[line_pick % len(body)]
    new = _mutate_line(lines[idx], op, target, text, pos, k)
    if not new.strip() or new.lstrip().startswith(b"#"):
        new = b"x" + new  # a blank or comment line is not a record; keep the case a record line
    if op == "duplicate":
        lines.insert(idx, lines[idx])
    else:
        lines[idx] = new
    return b"\n".join(lines), idx + 1


def _check_error(err: DatasetFormatError, dataset_dir: Path) -> None:
    """The error names an existing file of the dataset (and a line inside it when it gives one)."""
    assert err.path and err.path in str(err), err
    p = Path(err.path)
    assert p.exists(), f"error names a file that does not exist: {err}"
    assert os.path.commonpath([os.path.abspath(p), os.path.abspath(dataset_dir)]) == os.path.abspath(dataset_dir), err
    if err.line is not None and p.is_file():
        n_lines = len(_read_text_bytes(p).split(b"\n"))
        assert 1 <= err.line <= n_lines, f"line {err.line} outside {p} ({n_lines} lines): {err}"


def _open(target: Target, root: Path, on_error: str) -> Manifest | DatasetFormatError:
    try:
        return open_dataset(target.kind, root, on_error=on_error, **target.options)
    except DatasetFormatError as err:
        return err


def _dataset_dir(target: Target, corpus: dict[str, Path]) -> Path:
    root = corpus[target.root_key]
    return root.parent if root.is_file() or target.kind == "chexpert" else root


def _ids(m: Manifest) -> set[str]:
    return {r.id for r in m}


@pytest.fixture(scope="module")
def baselines(corpus: dict[str, Path]) -> dict[str, set[str]]:
    out = {}
    for name, target in TARGETS.items():
        m = open_dataset(target.kind, _root(target, corpus), on_error="skip", **target.options)
        assert len(m) > 0 and not m.skipped, (name, m.skipped)
        out[name] = _ids(m)
    return out


def _check_modes(name: str, target: Target, corpus: dict[str, Path], base_ids: set[str] | None) -> None:
    root, ddir = _root(target, corpus), _dataset_dir(target, corpus)
    strict = _open(target, root, "raise")
    lenient = _open(target, root, "skip")
    what = f"{name}: one mutated line / empty file"
    outcome(CATEGORY, what, "read" if isinstance(strict, Manifest) else
            "skipped" if isinstance(lenient, Manifest) else "file-level error")
    if isinstance(strict, DatasetFormatError):
        _check_error(strict, ddir)
    if isinstance(lenient, DatasetFormatError):
        _check_error(lenient, ddir)
        assert isinstance(strict, DatasetFormatError), f"{name}: skip mode raised where raise mode read: {lenient}"
        return
    for s in lenient.skipped:
        _check_error(DatasetFormatError(s.path, s.reason, s.line), ddir)
    if isinstance(strict, Manifest):
        assert not lenient.skipped and _ids(lenient) == _ids(strict), name
    else:
        assert lenient.skipped, f"{name}: raise mode failed ({strict}) but skip mode skipped nothing"
        first = lenient.skipped[0]
        assert (first.path, first.line) == (strict.path, strict.line), (first, strict)
    dropped = base_ids - _ids(lenient) if base_ids is not None else set()
    assert not dropped or lenient.skipped, f"{name}: records {sorted(dropped)[:3]} vanished without a skip entry"


@pytest.mark.parametrize("name", sorted(TARGETS))
@given(op=st.sampled_from(OPS), line_pick=st.integers(0, 10_000), text=TEXT, pos=st.integers(0, 10_000),
       k=st.integers(0, 100))
def test_reader_mutations(name: str, op: str, line_pick: int, text: str, pos: int, k: int,
                          corpus: dict[str, Path], baselines: dict[str, set[str]]) -> None:
    target = TARGETS[name]
    listing = _listing(target, corpus)
    original = listing.read_bytes()
    mutated, _ = _mutate(_read_text_bytes(listing), op, target, line_pick, text, pos, k)
    assume(mutated != _read_text_bytes(listing))
    with case(CATEGORY, f"{name}: one mutated line / empty file"):
        try:
            _write_text_bytes(listing, mutated)
            _check_modes(name, target, corpus, baselines[name] if op != "header_only" else None)
        finally:
            listing.write_bytes(original)


@pytest.mark.parametrize("name, value", [("chexpert/train.csv", ""), ("chexpert/train.csv", "LL"),
                                         ("mimic-cxr-jpg/metadata", ""), ("mimic-cxr-jpg/metadata", "LATERAL"),
                                         ("padchest", ""), ("padchest", "L")])
def test_mutated_view_cell_is_read_not_dropped(name: str, value: str, corpus: dict[str, Path],
                                               baselines: dict[str, set[str]]) -> None:
    """Regression: the frontal-only default left out an image whose view cell was blanked, and the fuzzer counted
    it as a silent drop. With ``views="*"`` every record stays; the default does filter the mutated row, which is
    why the target needs the option."""
    target = TARGETS[name]
    listing = _listing(target, corpus)
    original = listing.read_bytes()
    lines = original.split(b"\n")
    row = next(i for i, ln in enumerate(lines) if i > 0 and ln.strip()
               and ln.split(b",")[target.view_field] in (b"PA", b"AP"))
    fields = lines[row].split(b",")
    fields[target.view_field] = value.encode()
    lines[row] = b",".join(fields)
    frontal = len(open_dataset(target.kind, _root(target, corpus), on_error="skip"))
    with case(CATEGORY, f"{name}: one mutated line / empty file"):
        try:
            listing.write_bytes(b"\n".join(lines))
            _check_modes(name, target, corpus, baselines[name])
            assert _ids(open_dataset(target.kind, _root(target, corpus), **target.options)) == baselines[name]
            assert len(open_dataset(target.kind, _root(target, corpus), on_error="skip")) == frontal - 1
        finally:
            listing.write_bytes(original)


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
