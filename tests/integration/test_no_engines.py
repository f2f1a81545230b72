"""Work never waits forever for an engine that will not come.

With ``restart = "never"`` (the default) a pool whose engines all died has nothing
left to run on: ``pool.map``, ``pool.apply`` and ``pool.submit`` fail with
NoEnginesError naming the pool and the next step, a few seconds after the last engine
left. The positive control: the same kill with ``restart = "on-failure"`` (engines on
their way) lets the same calls finish on the replacements."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pxpool
from pxpool._core.waiting import NO_ENGINE_GRACE

from .test_reliability import engine_processes, gone
from .waits import wait_until

pytestmark = pytest.mark.integration
CALL_LIMIT = 90.0  # seconds a call may take before the test calls it a hang


def square(x: int) -> int:
    return x * x


def bounded(call: Callable[[], Any], limit: float = CALL_LIMIT) -> tuple[Any, float]:
    """``call()`` in a thread: (its result or the error it raised, seconds it took);
    the test fails if it does not return within ``limit``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test's thread
            outcome["value"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True, name="bounded call")
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"the call did not return within {limit:g}s: a hang"
    return outcome["value"], time.monotonic() - started


def kill_every_engine(pool: pxpool.Pool) -> None:
    """SIGKILL every engine process, and wait until the hub dropped them all."""
    victims = engine_processes(pool)
    assert victims, "the pool has no engine processes to kill"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert all(gone(pid, 10.0) for pid in victims)
    wait_until(lambda: not pool.ids, 60.0, "the hub to drop the killed engines")


@pytest.fixture
def abandoned() -> Iterator[pxpool.Pool]:
    """A pool (restart = "never") whose engines were all killed."""
    with pxpool.Pool.from_profile("local", engines=2) as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
        kill_every_engine(pool)
        yield pool


def check_no_engines(outcome: Any, took: float, work: str, first: bool = True) -> None:
    """NoEnginesError naming ``work``; the ``first`` call waited the grace (later ones on
    the task lane may fail at once: the pool has had no engine for longer than that)."""
    assert isinstance(outcome, pxpool.NoEnginesError), f"{work}: got {outcome!r}"
    assert work in str(outcome) and "scale_sync" in str(outcome), str(outcome)
    if first:
        assert NO_ENGINE_GRACE <= took + 1.0, f"{work} failed after {took:.1f}s, too soon"


def test_map_apply_and_submit_fail_when_no_engine_will_come(abandoned: pxpool.Pool) -> None:
    outcome, took = bounded(lambda: abandoned.map(square, range(10)))
    check_no_engines(outcome, took, "pool.map(square)")
    outcome, took = bounded(lambda: abandoned.map(square, range(10), timeout=60))
    check_no_engines(outcome, took, "pool.map(square)")
    outcome, took = bounded(lambda: abandoned.apply(square, 3))
    check_no_engines(outcome, took, "pool.apply(square)")
    outcome, took = bounded(lambda: abandoned.apply(square, 3, timeout=60))
    check_no_engines(outcome, took, "pool.apply(square)", first=False)
    outcome, took = bounded(lambda: abandoned.submit(square, 3).exception(CALL_LIMIT))
    check_no_engines(outcome, took, "pool.submit(square)", first=False)
    outcome, took = bounded(lambda: abandoned.lbview().apply(square, 3))
    check_no_engines(outcome, took, "pool.lbview().apply(square)")


def test_added_engines_take_the_work_again(abandoned: pxpool.Pool) -> None:
    """The pool is usable again once the user adds engines, as the error says."""
    abandoned.scale_sync(1)
    assert abandoned.map(square, range(5)) == [0, 1, 4, 9, 16]
    assert abandoned.submit(square, 4).result(60) == 16


def test_with_engines_on_their_way_the_work_waits_for_them() -> None:
    """Positive control: replacements are coming, so the same calls finish."""
    with pxpool.Pool.from_profile("local", engines=2, restart="on-failure") as pool:
        assert pool.apply(square, 2) == 4
        kill_every_engine(pool)
        outcome, _ = bounded(lambda: pool.map(square, range(10)))
        assert outcome == [x * x for x in range(10)], outcome
        outcome, _ = bounded(lambda: pool.submit(square, 7).result(CALL_LIMIT))
        assert outcome == 49
