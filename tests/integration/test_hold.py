"""A replacement engine serves no task before it replayed the pool's setup.

The setup code sleeps before it defines ``K``, so the replay takes 0.5 s: without the
hold, a load-balanced task that reaches the replacement meanwhile fails with NameError.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import ipyparallel as ipp
import pytest

import pxpool

from .waits import wait_until

pytestmark = pytest.mark.integration
SETUP = "import math, time\ntime.sleep(0.5)\nK = 7"
WAIT = 60.0  # seconds for a dead engine to be back (an id can stay reserved 30 s)


@ipp.interactive
def uses_setup(x: int) -> tuple[int, int]:
    """Needs ``K`` and ``math`` from the setup code and ``M`` from the push."""
    import os

    return x * K + M + int(math.sqrt(16)), os.getpid()  # type: ignore[name-defined]  # noqa: F821


def engine_pid() -> int:
    import os

    return os.getpid()


def started(engines: int) -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile(
        "local", engines=engines, restart="on-failure", max_restarts=5, restart_backoff=0.1
    ) as pool:
        pool.setup(SETUP)
        pool.push({"M": 3})
        yield pool


class Stream:
    """Load-balanced tasks, ``workers`` at a time, until stopped; results by item."""

    def __init__(self, pool: pxpool.Pool, workers: int) -> None:
        self.pool = pool
        self.results: dict[int, tuple[int, int]] = {}
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self._items = iter(range(10**6))
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self.work, daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def work(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                item = next(self._items)
            try:
                value = self.pool.apply(uses_setup, item, retries=3, timeout=30)
            except BaseException as exc:  # reported by the test, with the item
                self.errors.append(exc)
                return
            with self._lock:
                assert item not in self.results
                self.results[item] = value

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(WAIT)


def check(results: dict[int, tuple[int, int]], replacement: int) -> None:
    assert {item: value for item, (value, _) in results.items()} == {
        item: item * 7 + 3 + 4 for item in results
    }
    assert replacement in {pid for _, pid in results.values()}  # tasks reached it


@pytest.fixture()
def pool2() -> Iterator[pxpool.Pool]:
    yield from started(2)


@pytest.fixture()
def pool1() -> Iterator[pxpool.Pool]:
    yield from started(1)


def run_through_a_replacement(pool: pxpool.Pool, engine_id: int, workers: int) -> None:
    victim = pool.client[engine_id].apply_sync(engine_pid)
    tasks = Stream(pool, workers)
    try:
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: engine_id not in pool.ids, 10, f"engine {engine_id} leaving")
        wait_until(lambda: engine_id in pool.ids, WAIT, f"engine {engine_id}'s replacement")
        # sent straight to the replacement while it replays: runs after the replay
        value, replacement = pool.client[engine_id].apply_async(uses_setup, 1).get(timeout=WAIT)
        assert value == 14 and replacement != victim
        wait_until(
            lambda: sum(pid == replacement for _, pid in tasks.results.values()) >= 3,
            WAIT,
            "tasks on the replacement",
        )
    finally:
        tasks.join()
    assert not tasks.errors, tasks.errors
    check(tasks.results, replacement)


def test_tasks_reach_a_replacement_only_after_its_setup_replay(pool2: pxpool.Pool) -> None:
    run_through_a_replacement(pool2, 1, workers=3)


def test_a_one_engine_pool_answers_after_its_replacement_replayed(pool1: pxpool.Pool) -> None:
    run_through_a_replacement(pool1, 0, workers=2)
