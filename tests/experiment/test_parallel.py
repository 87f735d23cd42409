"""Jobs run pinned (one torch thread, deterministic algorithms) and restore the caller's settings; the busy-machine
warning follows the load average against the usable cores."""

from __future__ import annotations

import logging

import pytest
import torch

from medzoo.experiment import parallel


def _settings() -> tuple[int, bool]:
    return torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()


def test_in_process_jobs_are_pinned_and_settings_restored():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with parallel.JobPool(1) as pool:
            assert pool.submit(_settings).result() == (1, True)
        assert _settings() == (2, False)
    finally:
        torch.set_num_threads(before)


def test_a_failing_job_hands_its_error_to_the_future_and_restores_settings():
    before = _settings()
    with parallel.JobPool(1) as pool:
        fut = pool.submit(int, "not a number")
    with pytest.raises(ValueError, match="not a number"):
        fut.result()
    assert _settings() == before


def test_worker_init_keeps_workers_at_warning_unless_debug():
    logger = logging.getLogger("medzoo.test_parallel_probe")
    root = logging.getLogger()
    old = root.level, logger.level, torch.get_num_threads()
    try:
        parallel._worker_init(logging.INFO, {"medzoo.test_parallel_probe": logging.ERROR})
        assert root.level == logging.WARNING
        assert logger.level == logging.ERROR
        parallel._worker_init(logging.DEBUG, {})
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(old[0])
        logger.setLevel(old[1])
        torch.set_num_threads(old[2])


@pytest.mark.parametrize("load, busy", [(0.5, False), (2.0, False), (2.1, True), (7.9, True)])
def test_busy_warning_compares_the_load_average_with_the_usable_cores(monkeypatch, load, busy):
    monkeypatch.setattr(parallel.os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    warning = parallel.busy_warning()
    assert (warning is not None) == busy
    if busy:
        assert f"load average {load:.1f} on 2 core(s)" in warning


def test_default_workers_is_one_per_usable_core_and_at_most_one_per_job(monkeypatch):
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    assert [parallel.default_workers(n) for n in (1, 3, 10)] == [1, 3, 4]
    with pytest.raises(ValueError, match="workers"):
        parallel.JobPool(0)
