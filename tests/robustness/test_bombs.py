"""Bombs: small files that declare multi-gigabyte allocations, each refused before the allocation.

Every attack runs through the public interface (``read_image``, ``load_input``, ``open_dataset``, ``medzoo
prepare``, ``PreparedDataset``) in its own child process; the children run side by side, and each one's peak
resident memory (``ru_maxrss`` from ``resource.getrusage(RUSAGE_CHILDREN)`` in a launcher whose only child is the
attack) must stay under 1 GB. Before the budgets, the same files took 3.1 GB (the ``.nii.gz``), 964 MB (the
``.csv.gz``), 4.3 GB (the PNG, in predict) and 4 GB (the 250 mm NIfTI, in predict). ``medzoo predict`` itself is run
on the image bombs in-process: each is reported, naming its file, and the good input beside them is predicted.

The attacks that start torch, and the control (the budget raised: the same file then really takes over 1 GiB), are
slow tests. The in-process tests at the end show the other side of a budget: it is a documented default, raised by
its variable, and a file within it reads exactly as nibabel / Pillow read it (nothing is truncated to fit).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medzoo.cli.main import main
from medzoo.data import open_dataset
from medzoo.data.budget import MAX_PIXELS, MAX_TEXT_LINES, MAX_VOLUME_BYTES, BudgetExceeded
from medzoo.data.imageio import read_image, write_nifti
from medzoo.data.manifest import DatasetFormatError
from medzoo.data.prepared import prepare
from medzoo.data.transforms import cxr_preset
from tests.data.dataset_fixtures import MIMIC_LABEL_HEADER
from tests.robustness.bombs import (
    GB,
    Measured,
    csv_gz_bomb,
    expanded_size,
    nifti_gz_bomb,
    png_bomb,
    sparse_npy,
    spawn,
    wait_measured,
)
from tests.robustness.exports import tiny_export
from tests.robustness.tally import case, note

CATEGORY = "bombs"
CONTROL = "nii.gz, budget raised to 2 GiB"
HEAVY = ("prepare, DataLoader worker", "prepared-cache array")  # they start torch: slow tests


def _call(module: str, code: str) -> list[str]:
    """``python -c``: import only ``module`` (as ``m``), so each child's peak is the attack's, not torch's."""
    return ["-c", f"import {module} as m; {code}"]


def _write_bombs(base: Path, corpus: dict[str, Path]) -> dict[str, Path]:
    """Every bomb under ``base``: attack name -> the file (or folder, or dataset root) to attack with."""
    series = base / "series"
    series.mkdir()
    first = png_bomb(series / "slice000.png", 8000, 8000, "L")  # one slice is within the pixel budget
    for k in range(1, 200):
        (series / f"slice{k:03d}.png").hardlink_to(first)
    mimic = shutil.copytree(corpus["mimic-cxr-jpg"], base / "mimic")
    csv_gz_bomb(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_LABEL_HEADER)
    msd = shutil.copytree(corpus["msd"], base / "msd")
    nifti_gz_bomb(msd / "imagesTr" / "lung_000.nii.gz")  # the first record: nothing else is decoded before it
    cache = prepare(open_dataset("nih-cxr14", corpus["nih-cxr14"]), base / "cache",
                    transform=cxr_preset(False, size=(16, 16)))
    sparse_npy(cache / "parts" / "part-00000" / "000001.image.npy", (1024, 1024, 1024))
    return {"nii.gz": nifti_gz_bomb(base / "bomb.nii.gz"),
            "nii.gz longer than its header": nifti_gz_bomb(base / "long.nii.gz", (64, 64, 64), 1 << 30),
            "png": png_bomb(base / "rgba.png", 12000, 12000),
            "spacing 250 mm": write_nifti(base / "spacing250.nii.gz", np.zeros((4, 4, 4), np.int16),
                                          np.diag([250.0] * 3 + [1.0])),
            "slice folder": series, "csv.gz": mimic, "prepare, DataLoader worker": msd,
            "prepared-cache array": cache}


def _attacks(files: dict[str, Path]) -> dict[str, list[str]]:
    """Attack name -> the child's argv: the function a user calls (or the CLI) on the bomb."""
    images = {name: _call("medzoo.data", f"m.read_image({str(files[name])!r})")
              for name in ("nii.gz", "nii.gz longer than its header", "png", "spacing 250 mm")}
    return {**images,
            "slice folder": _call("medzoo.infer.inputs",
                                  f"m.load_input(m.classify_path({str(files['slice folder'])!r}))"),
            "csv.gz": _call("medzoo.data", f"m.open_dataset('mimic-cxr-jpg', {str(files['csv.gz'])!r})"),
            "prepare, DataLoader worker": ["-m", "medzoo.cli.main", "-q", "prepare", "msd",
                                           str(files["prepare, DataLoader worker"]), "--out", "cache",
                                           "--workers", "1", "--patch", "8", "8", "8", "--spacing", "20", "20", "20"],
            "prepared-cache array": _call("medzoo.data.prepared",
                                          f"m.PreparedDataset({str(files['prepared-cache array'])!r})[1]")}


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path]) -> dict[str, Path]:
    return _write_bombs(tmp_path_factory.mktemp("bombs"), corpus)


def _run_all(argv: dict[str, list[str]], runs: Path, env: dict[str, str] | None = None) -> dict[str, Measured]:
    """Each attack in its own child, all started at once; name -> exit code, output and peak memory."""
    folder = {name: runs / name.replace(" ", "_").replace(",", "") for name in argv}
    procs = {name: spawn(args, folder[name], env) for name, args in argv.items()}
    return {name: wait_measured(proc, folder[name]) for name, proc in procs.items()}


@pytest.fixture(scope="module")
def attacked(bombs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Measured]:
    """The attacks that import no torch (a second each)."""
    return _run_all({n: a for n, a in _attacks(bombs).items() if n not in HEAVY}, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def attacked_heavy(bombs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Measured]:
    """The attacks that start torch (and a DataLoader worker), and the control: the first attack with its budget
    raised, which really allocates what the header declares."""
    runs = tmp_path_factory.mktemp("runs_heavy")
    out = _run_all({n: a for n, a in _attacks(bombs).items() if n in HEAVY}, runs)
    return {**out, **_run_all({CONTROL: _attacks(bombs)["nii.gz"]}, runs, {MAX_VOLUME_BYTES: "2G"})}


# attack -> (the file the error names, what the message says)
EXPECTED = {
    "nii.gz": ("bomb.nii.gz", MAX_VOLUME_BYTES),
    "nii.gz longer than its header": ("long.nii.gz", "more than the 262496 bytes its header declares"),
    "png": ("rgba.png", MAX_PIXELS),
    "spacing 250 mm": ("spacing250.nii.gz", "voxel spacing 250 mm"),
    "slice folder": ("slice000.png", MAX_VOLUME_BYTES),
    "csv.gz": ("mimic-cxr-2.0.0-chexpert.csv.gz", MAX_TEXT_LINES),
    "prepare, DataLoader worker": ("lung_000.nii.gz", MAX_VOLUME_BYTES),
    "prepared-cache array": ("000001.image.npy", MAX_VOLUME_BYTES),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in EXPECTED])
def test_bomb_is_refused_naming_the_file_under_1_gb(request: pytest.FixtureRequest, name: str) -> None:
    note(CATEGORY, "small file, huge allocation", "refused from the header / while streaming, naming the file and "
         "the budget's variable; each attack in its own child, peak RSS (RUSAGE_CHILDREN) under 1 GB")
    run = request.getfixturevalue("attacked_heavy" if name in HEAVY else "attacked")[name]
    with case(CATEGORY, f"small file, huge allocation: {name}"):
        assert run.returncode != 0, run.stdout
        assert EXPECTED[name][0] in run.stderr
        assert EXPECTED[name][1] in run.stderr
        assert run.maxrss > 0, "no peak memory measured"
        assert run.maxrss < GB, f"peak {run.maxrss / 2**20:.0f} MiB"


@pytest.mark.slow
def test_control_the_measure_sees_a_real_allocation(attacked_heavy: dict[str, Measured]) -> None:
    """With the budget raised, the same 1 MB file is read whole: 1 GiB of voxels, and the peak shows it."""
    run = attacked_heavy[CONTROL]
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.maxrss > 2**30


@pytest.mark.slow
def test_worker_error_is_one_line(attacked_heavy: dict[str, Measured]) -> None:
    """A bomb read in a DataLoader worker: the one-line error, not the worker's traceback."""
    err = attacked_heavy["prepare, DataLoader worker"].stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("model", ["ct", "cxr"])
def test_predict_refuses_each_bomb_and_goes_on(bombs: dict[str, Path], tmp_path: Path, capsys, model: str) -> None:
    """``medzoo predict`` on the bombs and one good input: each bomb is reported naming its file, the good input is
    predicted, and the exit code is 1 (an input failed), not a crash."""
    if model == "ct":
        export = tiny_export(tmp_path, "ct")
        names = ["nii.gz", "nii.gz longer than its header", "spacing 250 mm"]
        good = write_nifti(tmp_path / "good.nii.gz", np.zeros((8, 8, 8), np.int16), np.eye(4))
    else:
        export = tiny_export(tmp_path, "cxr")
        names = ["png", "slice folder"]
        good = png_bomb(tmp_path / "good.png", 40, 40, "L")
    rc = main(["-q", "predict", "--model", str(export), *(str(bombs[n]) for n in names), str(good),
               "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 1
    assert f"1 input(s) predicted, {len(names)} failed" in out.out
    for name in names:
        assert EXPECTED[name][0] in out.err, name


def test_bomb_files_are_small_and_genuine(tmp_path: Path) -> None:
    """The writers make what they claim: small files whose streams decode, by nibabel and Pillow, to the sizes
    declared (checked on small twins; the big ones differ only in the count of repeated blocks)."""
    csv = csv_gz_bomb(tmp_path / "l.csv.gz", "a,b")
    assert csv.stat().st_size < 110_000
    assert expanded_size(csv.read_bytes(), "gzip") == len("a,b\n") + (100 << 20)
    assert nifti_gz_bomb(tmp_path / "b.nii.gz").stat().st_size < 1_100_000
    assert np.asarray(nib.load(nifti_gz_bomb(tmp_path / "s.nii.gz", (9, 8, 7))).dataobj).shape == (9, 8, 7)
    with Image.open(png_bomb(tmp_path / "s.png", 300, 200)) as img:
        img.load()
        assert (img.size, img.mode, img.getextrema()) == ((300, 200), "RGBA", ((0, 0),) * 4)


# ------------------------------------------------------------------------------------- budgets are raisable defaults

def test_volume_budget_is_the_header_size_and_can_be_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = np.arange(16 * 16 * 16, dtype=np.int16).reshape(16, 16, 16)  # 8 KiB of voxel data
    path = write_nifti(tmp_path / "v.nii.gz", vol, np.eye(4))
    monkeypatch.setenv(MAX_VOLUME_BYTES, "8191")
    with pytest.raises(BudgetExceeded, match="v.nii.gz"):
        read_image(path)
    monkeypatch.setenv(MAX_VOLUME_BYTES, "8K")
    np.testing.assert_array_equal(read_image(path)[0][0], np.asarray(nib.load(path).dataobj))


def test_pixel_budget_counts_header_pixels_and_can_be_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = png_bomb(tmp_path / "p.png", 300, 200, "L")
    monkeypatch.setenv(MAX_PIXELS, str(300 * 200 - 1))
    with pytest.raises(BudgetExceeded, match="300 x 200"):
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS, str(300 * 200))
    with Image.open(path) as img:
        np.testing.assert_array_equal(read_image(path)[0][0], np.asarray(img))


def test_text_budget_refuses_a_long_listing_and_can_be_raised(corpus: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = shutil.copytree(corpus["mimic-cxr-jpg"], tmp_path / "mimic")
    monkeypatch.setenv(MAX_TEXT_LINES, "2")
    with pytest.raises(BudgetExceeded, match=MAX_TEXT_LINES):
        open_dataset("mimic-cxr-jpg", root)
    monkeypatch.setenv(MAX_TEXT_LINES, "1000")
    assert len(open_dataset("mimic-cxr-jpg", root)) > 0


def test_a_bad_budget_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = png_bomb(tmp_path / "p.png", 4, 4, "L")
    monkeypatch.setenv(MAX_PIXELS, "lots")
    with pytest.raises(ValueError, match=MAX_PIXELS):
        read_image(path)


def test_budget_error_is_a_dataset_format_error() -> None:
    """Callers that report bad inputs and go on (predict, readers with on_error='skip') catch it as such."""
    assert issubclass(BudgetExceeded, DatasetFormatError)
