"""The package installs and runs as the README says; importing it has no side effects."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medzoo.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "pip install" in main_job
    assert "torch==2.13.0" in main_job
    assert main_job.endswith("medzoo demo")
    assert "pytest" in tests
    assert '-m "not slow and not gpu and not network"' in tests
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = ci.strip().splitlines()[-1].replace(" -q", "")
    assert ci_command == tests.replace(" -q", ""), "'.ci/run' must run the README's test command"
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_top_level_layout():
    for name in ("setup.py", "README.md", "medzoo", "configs", "weights", "tests", "tools", ".ci", "docs"):
        assert (ROOT / name).exists(), name


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``python -c code`` in a fresh interpreter at the repository root; it must exit 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def test_import_is_lazy_and_side_effect_free():
    code = ("import sys, logging, warnings; before = list(warnings.filters); import medzoo; "
            "assert 'torch' not in sys.modules, 'import medzoo imported torch'; "
            "assert warnings.filters == before; assert not logging.getLogger().handlers; print(medzoo.__version__)")
    out = _python(code)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", out.stdout.strip())


def test_cli_help_and_list(capsys):
    assert main([]) == 0
    assert "convert" in capsys.readouterr().out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"resnet{d}" in out for d in (10, 18, 34, 50, 101, 152, 200))
    assert "resnet18.medicalnet23" in out


def test_subpackages_resolve_without_a_separate_import():
    code = ("import sys, medzoo; assert 'medzoo.data' not in sys.modules; d = medzoo.data; "
            "assert d.open_dataset.__module__.startswith('medzoo.data'); assert 'torch' not in sys.modules; "
            "assert {'resolve', 'load', 'load_pretrained'} <= set(dir(medzoo.zoo)); assert 'torch' not in sys.modules")
    _python(code)


def test_configs_and_catalog_are_package_resources_in_the_checkout():
    """The fast twin of the wheel test: the package reads its configs and catalog through importlib.resources, and
    in a checkout those are the repository's own files (the links medzoo/configs and medzoo/weights)."""
    from importlib.resources import files

    from medzoo.utils.resources import catalog_file, config_dir
    from medzoo.zoo.catalog import default_catalog_path

    package = files("medzoo")
    assert package.joinpath("weights/catalog.yaml").read_text() == (ROOT / "weights" / "catalog.yaml").read_text()
    shipped = sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").glob("*/*.yaml"))
    assert shipped == sorted(p.relative_to(package.joinpath("configs")) for p in
                             Path(str(package.joinpath("configs"))).glob("*/*.yaml"))
    assert default_catalog_path() == catalog_file()
    assert Path(str(package)) in config_dir("experiments").parents


def _wheel_names(whl: Path) -> set[str]:
    import zipfile

    with zipfile.ZipFile(whl) as z:
        return set(z.namelist())


@pytest.mark.slow
def test_the_wheel_carries_configs_and_catalog(tmp_path):
    """Build the wheel, install it into a fresh folder, and read the configs and catalog from there (a regular or
    --user install sees exactly this), with the checkout off the path."""
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout; links stay links
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "docs"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), "-q"], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    (whl,) = (tmp_path / "dist").glob("medzoo-*.whl")
    names = _wheel_names(whl)
    expected = {f"medzoo/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
                for p in (ROOT / "configs").glob("*/*.yaml")} | {"medzoo/weights/catalog.yaml"}
    assert expected - names == set()
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(whl),
                              "-q"], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    code = ("import medzoo, sys; from medzoo.utils.resources import catalog_file, config_dir; "
            "assert medzoo.__file__.startswith(sys.argv[1]), medzoo.__file__; "
            "print(len(list(config_dir('experiments').glob('*.yaml'))), catalog_file().read_text()[:30])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    count, head = out.stdout.split(" ", 1)
    assert int(count) == len(list((ROOT / "configs" / "experiments").glob("*.yaml")))
    assert head.strip() == (ROOT / "weights" / "catalog.yaml").read_text()[:30].strip()
