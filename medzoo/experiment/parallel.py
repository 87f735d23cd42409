"""Run experiment jobs (training cells, baselines, a pretraining run) so that their numbers never depend on threads.

Every job runs under :func:`pinned`: torch on exactly one intra-op thread and deterministic algorithms on, whatever
``OMP_NUM_THREADS`` or the core count says. Parallel reductions split work by thread count and so round differently
with 1 and 2 threads, which is enough to flip a comparison between two inits; with one thread per job the numbers are
the same on a laptop and a server. The cores are used instead by running jobs side by side in worker processes
(:class:`JobPool`, ``spawn`` start, one job per process at a time). A pool of one worker runs jobs in this process.

Example:
    >>> with JobPool(1) as pool:
    ...     pool.submit(sum, [1, 2, 3]).result()
    6
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import torch

__all__ = ["JobPool", "default_workers", "pinned", "usable_cores", "busy_warning"]

log = logging.getLogger(__name__)

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; the core count where affinity is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(jobs: int) -> int:
    """As many single-thread workers as usable cores, at most one per job."""
    return max(1, min(usable_cores(), jobs))


def busy_warning() -> str | None:
    """A sentence when the 1-minute load average exceeds the usable cores (other work competes for the CPU)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = usable_cores()
    if load <= cores:
        return None
    return (f"the machine is busy: load average {load:.1f} on {cores} core(s); this takes longer than on a quiet "
            "machine (the numbers do not change)")


@contextlib.contextmanager
def pinned() -> Iterator[None]:
    """Torch on one intra-op thread with deterministic algorithms inside the block; the settings are restored after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _call_pinned(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    with pinned():
        return fn(*args, **kwargs)


def _worker_init(root_level: int, levels: dict[str, int]) -> None:
    """Logging in a worker: the parent's levels, but at least WARNING (unless the parent logs DEBUG)."""
    torch.set_num_threads(1)
    floor = root_level if root_level <= logging.DEBUG else max(root_level, logging.WARNING)
    logging.basicConfig(format=LOG_FORMAT)  # a handler on stderr, as the CLI's (a no-op where one exists)
    logging.getLogger().setLevel(floor)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(max(level, floor))


def _parent_levels() -> tuple[int, dict[str, int]]:
    named = {name: lg.level for name, lg in logging.Logger.manager.loggerDict.items()
             if isinstance(lg, logging.Logger) and lg.level != logging.NOTSET}
    return logging.getLogger().getEffectiveLevel(), named


class JobPool:
    """``workers`` single-thread worker processes (or this process when ``workers == 1``) that run pinned jobs.

    Jobs and their arguments must be picklable when ``workers > 1`` (module-level functions, dataclasses).

    Args:
        workers: worker processes; 1 runs each job in this process when it is submitted.
    """

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> JobPool:
        if self.workers > 1:
            # spawn: a forked child would inherit the parent's OpenMP thread pool state, which can hang it.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init, initargs=_parent_levels())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)
            self._pool = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` pinned; returns its future (already done when ``workers == 1``)."""
        if self._pool is not None:
            return self._pool.submit(_call_pinned, fn, args, kwargs)
        fut: Future = Future()
        try:
            fut.set_result(_call_pinned(fn, args, kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future, as a pool does
            fut.set_exception(err)
        return fut
