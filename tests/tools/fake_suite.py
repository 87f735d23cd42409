"""A fake benchmark suite for the driver tests (no timing)."""

from __future__ import annotations

CALLS: list[bool] = []


def bench_fake(quick: bool = False) -> list[dict]:
    CALLS.append(quick)
    return [
        {"suite": "fake", "name": "met figure", "ratio": 2.0, "target": ">= 1.5", "extra": 1},
        {"suite": "fake", "name": "missed figure", "ratio": 1.2, "target": "<= 1.05", "reason": "too slow here"},
        {"suite": "fake", "name": "report only", "ratio": 0.5, "target": "report"},
    ]


def bench_pairs(quick: bool = False) -> list[dict]:
    return [{"figure": "speed", "phase": "inference", "speedup_vs_loop": 1.4, "target_vs_loop": 1.3,
             "speedup_vs_dense": 1.2, "target_vs_dense": 1.5}]


def bench_broken(quick: bool = False) -> list[dict]:
    import not_a_real_module_xyz  # noqa: F401
    return []
