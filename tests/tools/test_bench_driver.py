"""The benchmark driver (tools/bench.py) on fake suites: no real timing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.tools import fake_suite
from tools.bench import SUITES, SuiteMissing, load_suite, main, run_benchmarks
from tools.benchlib import read_section_targets, row_targets, write_benchmarks_md

FAKE = {"fake": ("tests.tools.fake_suite", "bench_fake"), "pairs": ("tests.tools.fake_suite", "bench_pairs"),
        "gone": ("tools.bench_does_not_exist", "bench_gone")}


def test_runs_a_suite_prints_and_writes_section(tmp_path):
    out, lines = tmp_path / "docs" / "BENCHMARKS.md", []
    fake_suite.CALLS.clear()
    results = run_benchmarks(["fake"], quick=True, output=out, emit=lines.append, suites=FAKE)
    assert fake_suite.CALLS == [True]
    assert list(results) == ["fake"]
    text = out.read_text()
    assert text.startswith("# Benchmarks")
    assert "## fake (quick)" in text
    assert "Machine: cpu" in text
    assert "| met figure | 2 | >= 1.5 |" in text and "| extra |" in text.splitlines()[text.splitlines().index(
        next(line for line in text.splitlines() if line.startswith("| name")))]
    assert any("## fake (quick)" in line for line in lines)
    headers = [line for line in text.splitlines() if line.startswith("| name | ratio | target")]
    assert headers == ["| name | ratio | target | extra |", "| name | ratio | target | reason |",
                       "| name | ratio | target |"], "rows with different keys get their own tables"
    summary = text[text.index("<!-- suite:summary -->"): text.index("<!-- /suite:summary -->")]
    assert "missed figure: measured 1.2, target <= 1.05. Reason: too slow here" in summary
    assert "met figure: measured" not in summary
    assert "report only" not in summary


def test_rewrite_replaces_only_its_section_and_summary_covers_all(tmp_path):
    out = tmp_path / "B.md"
    run_benchmarks(["fake"], output=out, emit=lambda s: None, suites=FAKE)
    run_benchmarks(["pairs"], output=out, emit=lambda s: None, suites=FAKE)
    first = out.read_text()
    run_benchmarks(["fake"], quick=True, output=out, emit=lambda s: None, suites=FAKE)
    text = out.read_text()
    assert text.count("<!-- suite:fake -->") == 1
    assert "## fake (quick)" in text
    assert "## fake\n" not in text
    assert text.index("<!-- suite:summary -->") < text.index("<!-- suite:fake -->") < text.index("<!-- suite:pairs")
    assert first[first.index("<!-- suite:pairs -->"):] == text[text.index("<!-- suite:pairs -->"):]
    targets = read_section_targets(text)
    assert {(t["suite"], t["met"]) for t in targets} == {("fake", True), ("fake", False), ("pairs", True),
                                                         ("pairs", False)}
    assert "inference speedup_vs_dense: measured 1.2, target >= 1.5. Reason: not given" in text


def test_all_skips_missing_suites_with_a_message(tmp_path):
    lines = []
    results = run_benchmarks(["all"], output=None, emit=lines.append, suites=FAKE)
    assert list(results) == ["fake", "pairs"]
    assert any(line.startswith("skipping suite 'gone': module tools.bench_does_not_exist not found") for line in lines)


def test_named_missing_suite_and_unknown_name_are_errors():
    with pytest.raises(SuiteMissing, match="gone"):
        run_benchmarks(["gone"], emit=lambda s: None, suites=FAKE)
    with pytest.raises(KeyError, match="unknown benchmark suite 'nope'"):
        load_suite("nope", FAKE)


def test_import_error_inside_a_suite_is_not_hidden_as_missing():
    with pytest.raises(ModuleNotFoundError, match="not_a_real_module_xyz"):
        run_benchmarks(["all"], emit=lambda s: None, suites={"broken": ("tests.tools.fake_suite", "bench_broken")})


def test_row_targets_formats():
    assert row_targets("s", {"name": "a", "ratio": 1.0, "target": "report"}) == []
    (t,) = row_targets("s", {"name": "a", "ratio": 5.5, "target": 5.0, "note": "n"})
    assert t["met"]
    assert t["target"] == ">= 5"
    assert t["reason"] == "n"
    (t,) = row_targets("s", {"name": "a", "ratio": 1.04, "target": "<= 1.05"})
    assert t["met"]


def test_write_keeps_foreign_text(tmp_path):
    out = tmp_path / "B.md"
    out.write_text("# Benchmarks\n\nhand-written intro\n")
    write_benchmarks_md(out, "x", "## x\n\nbody", [])
    write_benchmarks_md(out, "x", "## x\n\nbody 2", [])
    text = out.read_text()
    assert "hand-written intro" in text
    assert "body 2" in text
    assert "body\n" not in text
    assert "None." in text


def test_real_suite_table_and_command_line():
    assert {"overhead", "roofline", "encoder", "series", "data", "predict"} <= set(SUITES)
    assert callable(load_suite("overhead"))
    assert callable(load_suite("roofline"))
    with pytest.raises(SystemExit):
        main(["nope"])


def test_conv_flop_count_by_hand():
    import torch
    from torch import nn

    from tools.bench_roofline import count_conv_flops
    net = nn.Sequential(nn.Conv3d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv3d(4, 8, 1, groups=2))
    x = torch.zeros(3, 2, 8, 8, 8)  # outputs 4x4x4 voxels
    expected = 3 * (2 * 2 * 4 * 27 * 64 + 2 * (4 // 2) * 8 * 1 * 64)
    assert count_conv_flops(net, x) == expected


def test_command_line_runs_a_registered_suite(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SUITES, "fake", FAKE["fake"])
    monkeypatch.setitem(SUITES, "gone", FAKE["gone"])
    out = tmp_path / "B.md"
    assert main(["fake", "--quick", "--write", "--output", str(out)]) == 0
    assert "## fake (quick)" in capsys.readouterr().out
    assert "<!-- suite:fake -->" in out.read_text()
    assert main(["gone"]) == 2
    assert "module tools.bench_does_not_exist not found" in capsys.readouterr().err


def test_the_package_does_not_reach_into_the_repository():
    """Benchmarks live in tools/: nothing in medzoo/ imports them, by name or through importlib."""
    package = Path(__file__).resolve().parents[2] / "medzoo"
    pattern = re.compile(r"^\s*(from|import)\s+tools\b|import_module\(\s*[\"']tools", re.MULTILINE)
    hits = [str(p) for p in package.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert hits == []
