"""Regenerate the README's demo section from a fresh run of ``medzoo demo`` (and ``medzoo demo --quick``).

One command::

    python tools/demo_readme.py                 # runs both demos in fresh folders, then rewrites the README section
    python tools/demo_readme.py --from-docs     # only rewrites the README section from the committed docs/demo/

A run copies the full demo's ``report.md``, ``results.csv`` and plots into ``docs/demo/`` and records the machine,
the load average before and after, and the wall and CPU seconds of both commands in ``docs/demo/run.json``. The
README section between the ``demo:begin`` and ``demo:end`` markers is then written from those files only, so
``tests/experiment/test_demo_readme.py`` can check that every number in it is the committed run's. Run it on a quiet
machine (the tool prints the load average; a busy machine changes the times, never the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medzoo.experiment.demo_report import machine

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "demo"
BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"
PLOTS = ("fraction_lung_seg.png", "paired_lung_seg.png", "curves_lung_seg.png")


def _run(args: list[str], out: Path) -> dict[str, Any]:
    """Run ``medzoo demo ARGS --out OUT`` in a fresh folder; returns its wall seconds and load averages."""
    shutil.rmtree(out, ignore_errors=True)
    before = os.getloadavg()[0]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medzoo.cli.main", "demo", *args, "--out", str(out)], check=True)
    wall = time.perf_counter() - t
    demo = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    return {"command": " ".join(["medzoo", "demo", *args]), "wall_seconds": round(wall, 1),
            "cpu_seconds": round(demo["seconds"]["all processes, CPU"], 1), "workers": demo["workers"],
            "load_before": round(before, 2), "load_after": round(os.getloadavg()[0], 2)}


def run_and_copy(work: Path) -> None:
    """Run the full and the quick demo, copy the full one's report, results and plots into ``docs/demo/``."""
    full = _run([], work / "full")
    quick = _run(["--quick"], work / "quick")
    DOCS.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "full" / "report.md", DOCS / "report.md")
    shutil.copy(work / "full" / "experiment" / "results.csv", DOCS / "results.csv")
    for png in PLOTS:
        shutil.copy(work / "full" / "experiment" / png, DOCS / png)
    run = {"machine": machine(), "full": full, "quick": quick}
    (DOCS / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def _section(report: str, heading: str) -> str:
    """The body of one ``##`` section of ``report`` (without its heading)."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", report, flags=re.M | re.S)
    if m is None:
        raise ValueError(f"docs/demo/report.md has no '## {heading}' section")
    return m.group(1).strip()


def _time_line(run: dict[str, Any]) -> str:
    m = run["machine"]
    parts = [f"`{r['command']}` took {r['wall_seconds']:.0f} s wall ({r['cpu_seconds']:.0f} CPU-seconds on "
             f"{r['workers']} workers; 1-minute load average {r['load_before']:.2f} at the start, "
             f"{r['load_after']:.2f} at the end)" for r in (run["full"], run["quick"])]
    busy = [f"`{r['command']}`" for r in (run["full"], run["quick"])
            if max(r["load_before"], r["load_after"]) > m["cores"]]
    note = (f" The load average exceeded the {m['cores']} cores during {' and '.join(busy)}: other work shared the "
            "CPU, so a quiet machine is faster." if busy else "")
    return (f"Measured on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}, "
            f"torch {m['torch']}): {parts[0]}, and {parts[1]}.{note}")


def render_section(report: str, run: dict[str, Any]) -> str:
    """The README's demo section, from ``docs/demo/report.md`` and ``docs/demo/run.json``."""
    held_out = _section(report, "3. Held-out task: CXR lung segmentation (Montgomery-style set)")
    held_out = held_out.replace("](experiment/", "](docs/demo/")
    settings = report.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    pretraining = _section(report, "1. Pretraining (one encoder, three tasks)")
    return "\n".join([
        BEGIN, "<!-- written by `python tools/demo_readme.py` from docs/demo/; do not edit by hand -->", "",
        "`medzoo demo [--out DIR] [--quick] [--workers N]` writes the synthetic corpus (in the public datasets' own "
        "formats), pretrains one shared resnet10 encoder on CT segmentation + COVIDx-CT series classification + CXR "
        "findings, exports it and publishes it into a local catalog (sha256-verified, loaded back by name), then "
        "measures it on a task held out from pretraining: lung segmentation on Montgomery-style CXRs whose lungs lie "
        "under ribs, clavicles, vessels and devices, next to a gastric bubble as dark as lung. Re-running reuses "
        "finished steps; a line per finished job shows progress, and a warning says when the machine is busy.", "",
        _time_line(run), "", settings, "", "Pretraining, on its own test splits:", "", pretraining, "", held_out, "",
        "Every job runs on one torch thread with deterministic algorithms, and jobs run side by side in worker "
        "processes, so the tables above are the same bytes with `OMP_NUM_THREADS=1` and 1 worker as with "
        "`OMP_NUM_THREADS=2` and 2 workers (`tests/experiment/test_demo.py`). The full report of this run is "
        "[docs/demo/report.md](docs/demo/report.md), its per-cell values "
        "[docs/demo/results.csv](docs/demo/results.csv).", END])


def rewrite_readme(readme: Path = ROOT / "README.md") -> None:
    """Replace the text between the markers in ``readme`` with :func:`render_section` of the committed run."""
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: the markers {BEGIN} and {END} are missing")
    report = (DOCS / "report.md").read_text(encoding="utf-8")
    run = json.loads((DOCS / "run.json").read_text(encoding="utf-8"))
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + render_section(report, run) + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-docs", action="store_true", help="skip the runs; rewrite the README from docs/demo/")
    parser.add_argument("--work", default=None, help="folder for the two demo runs (default: a temporary one)")
    args = parser.parse_args(argv)
    if not args.from_docs:
        print(f"load average {os.getloadavg()[0]:.2f} on {machine()['cores']} cores", file=sys.stderr)
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="medzoo-demo-readme-"))
        run_and_copy(work)
    rewrite_readme()
    print(f"README demo section rewritten from {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
