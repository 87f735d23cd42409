"""The package installs and runs as the README says; importing it has no side effects."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from medzoo.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "pip install" in main_job and "torch==2.13.0" in main_job and main_job.endswith("medzoo demo")
    assert "pytest" in tests and '-m "not slow and not gpu and not network"' in tests
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = ci.strip().splitlines()[-1].replace(" -q", "")
    assert ci_command == tests.replace(" -q", ""), "'.ci/run' must run the README's test command"
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_top_level_layout():
    for name in ("setup.py", "README.md", "medzoo", "configs", "weights", "tests", "tools", ".ci", "docs"):
        assert (ROOT / name).exists(), name


def test_import_is_lazy_and_side_effect_free():
    code = ("import sys, logging, warnings; before = list(warnings.filters); import medzoo; "
            "assert 'torch' not in sys.modules, 'import medzoo imported torch'; "
            "assert warnings.filters == before; assert not logging.getLogger().handlers; print(medzoo.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", out.stdout.strip())


def test_cli_help_and_list(capsys):
    assert main([]) == 0
    assert "convert" in capsys.readouterr().out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"resnet{d}" in out for d in (10, 18, 34, 50, 101, 152, 200))
    assert "resnet18.medicalnet23" in out
