"""tools/bench_series.py compares like with like: packed, loop and dense encode to the same outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "tools" / "bench_series.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_series", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_three_methods_agree(bench, monkeypatch):
    monkeypatch.setattr(bench, "LENGTHS", (3, 1, 5))
    monkeypatch.setattr(bench, "SIZE", 32)
    monkeypatch.setattr(bench, "CHUNK", 4)
    enc, head, x, pad = bench._setup()
    enc.eval()
    with torch.no_grad():
        outs = {name: fn(enc, head, x, pad) for name, fn in bench.METHODS.items()}
    assert outs["packed"].shape == (3, 3)
    torch.testing.assert_close(outs["loop"], outs["packed"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["dense"], outs["packed"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_quick_bench_runs(bench):
    rows = bench.bench_series(quick=True)
    speed = [r for r in rows if r["figure"] == "speed"]
    memory = [r for r in rows if r["figure"] == "memory"]
    assert [r["phase"] for r in speed] == ["inference", "train_step"]
    assert all(r["repeats"] >= 11 for r in speed)
    assert [r["mode"] for r in memory] == ["inference", "train_checkpoint"]
    assert all(len(r["peak_net_mb"]) == 3 and min(r["peak_net_mb"]) > 0 for r in memory)
