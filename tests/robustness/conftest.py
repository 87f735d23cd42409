"""Fixtures of the robustness suite: the hypothesis profile (reproducible, bounded) and realistic inputs.

The profile ``medzoo-robustness`` (deadline=None, derandomize=True, at most 50 examples) is registered and loaded
here, so every run tries the same examples. ``corpus`` is the tiny synthetic corpus, written once per session; the
tests that mutate a file of it restore the original bytes afterwards. ``small_disk`` mounts a real tmpfs (root only),
so a full disk is the kernel's, not a patched ``open``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.data.dataset_fixtures import DatasetWriter

settings.register_profile(
    "medzoo-robustness", deadline=None, derandomize=True, max_examples=40, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("medzoo-robustness")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny synthetic corpus (kind -> root), plus MIMIC and PadChest fixtures and a nifti-folder manifest."""
    from medzoo.data.synth import write_synthetic_corpus

    base = tmp_path_factory.mktemp("corpus")
    paths = {k: Path(v) for k, v in write_synthetic_corpus(base / "synth", seed=0, size="tiny").items()}
    writer = DatasetWriter(base / "fixtures")
    paths["mimic-cxr-jpg"], paths["padchest"] = writer.mimic(), writer.padchest()
    task = paths["msd"]
    rows = ["image,label,patient_id"]
    volumes = sorted((task / "imagesTr").glob("[!.]*.nii.gz"))
    rows += [f"imagesTr/{p.name},labelsTr/{p.name},pat{i}" for i, p in enumerate(volumes)]
    (task / "manifest_volumes.csv").write_text("\n".join(rows) + "\n")
    paths["nifti-folder"] = task / "manifest_volumes.csv"
    return paths


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mount(size)``: a fresh tmpfs of ``size`` under ``tmp_path``, unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
