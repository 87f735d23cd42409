"""The README's demo section is the committed run's: ``tools/demo_readme.py`` writes it from ``docs/demo/`` only, its
numbers are those of ``docs/demo/report.md``, and that report's numbers follow from ``docs/demo/results.csv``."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tools import demo_readme

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "demo"


@pytest.fixture(scope="module")
def committed():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(demo_readme.BEGIN, 1)[1].split(demo_readme.END, 1)[0]
    report = (DOCS / "report.md").read_text(encoding="utf-8")
    run = json.loads((DOCS / "run.json").read_text(encoding="utf-8"))
    with open(DOCS / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return section, report, run, rows


def test_readme_section_is_what_the_tool_writes_from_docs(committed):
    section, report, run, _ = committed
    assert demo_readme.BEGIN + section + demo_readme.END == demo_readme.render_section(report, run)


def test_readme_tables_and_sentences_equal_the_committed_report(committed):
    section, report, _, _ = committed
    pretraining = report.split("## 1. ", 1)[1].split("\n## ", 1)[0]
    held_out = report.split("## 3. ", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in (pretraining + held_out).splitlines() if ln.startswith(("| ", "- "))]
    assert len(lines) > 10
    for line in lines:
        assert line in section, line
    numbers = re.findall(r"[+-]?\d+\.\d{3}", "\n".join(lines))
    assert numbers == re.findall(r"[+-]?\d+\.\d{3}", "\n".join(ln for ln in section.splitlines()
                                                               if ln.startswith(("| ", "- "))))


def test_readme_states_the_measured_times_and_the_machine(committed):
    section, _, run, _ = committed
    for key in ("full", "quick"):
        assert f"`{run[key]['command']}` " in section
        assert f"{run[key]['wall_seconds']:.0f} s wall" in section
        assert "load average" in section
    assert run["machine"]["cpu"] in section
    assert f"{run['machine']['cores']} cores" in section


def test_committed_report_follows_from_its_per_cell_results(committed):
    _, report, _, rows = committed
    value = {(r["init"], float(r["fraction"]), int(r["seed"])): float(r["value"]) for r in rows}
    inits = list(dict.fromkeys(r["init"] for r in rows))
    fractions = sorted({float(r["fraction"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    assert len(seeds) >= 5
    table = {ln.split("|")[1].strip().split(" ")[0]: ln for ln in report.splitlines()
             if ln.startswith("| ") and "−" not in ln.split("|")[1]}
    paired = {ln.split("|")[1].strip().split(" ")[0]: ln for ln in report.splitlines()
              if ln.startswith("| ") and "−" in ln.split("|")[1]}
    assert "threshold" in table
    for init in inits:
        for f in fractions:
            v = np.array([value[(init, f, s)] for s in seeds])
            assert f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" in table[init], (init, f)
            if init == "scratch":
                continue
            d = v - np.array([value[("scratch", f, s)] for s in seeds])
            lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(len(d)))
            assert f"{d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] {(d > 0).sum()}/{len(d)}" in paired[init], (init, f)
