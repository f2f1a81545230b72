"""Task events from both routes of a real pool, and the dashboard's publisher.

One local pool of two engines runs a map (lane chunks), failing lane tasks, a map and an
apply through the hub and a ``%px``-like execute; each finished task is one event with
its engine, function, times and outcome. The pool's process publishes its state while
a page asks (the ``want`` file) and runs an action queued as a request file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import pxpool
from pxpool._core import runtime as _runtime
from pxpool._dashboard import files

pytestmark = pytest.mark.integration


def slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def fails(x: int) -> int:
    raise ValueError(x)


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    pool = pxpool.Pool.from_profile("local", engines=2, pool_name="task-events")
    pool.start_sync()
    try:
        yield pool
    finally:
        pool.stop_sync()


def wait_for(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g}s: {check}")
        time.sleep(0.05)


def test_both_routes_record_engine_function_times_and_outcome(pool: pxpool.Pool) -> None:
    began = time.time()
    assert pool.map(slow_square, range(30)) == [x * x for x in range(30)]
    futures = [pool.submit(fails, i, retries=0) for i in range(2)]
    pxpool.wait(futures, timeout=30)
    assert pool.lbview().map(abs, range(-4, 0)) == [4, 3, 2, 1]
    pool.execute("a = 1")
    wait_for(lambda: len({e.function for e in pool.task_events()}) >= 4, 10.0)
    events = pool.task_events(seconds=time.time() - began + 1)
    by = {(e.function, e.route) for e in events}
    assert {("slow_square", "lane"), ("fails", "lane"), ("abs", "hub")} <= by
    assert ("execute", "hub") in by
    assert all(began - 1 <= e.start <= e.end <= time.time() for e in events)
    assert {e.engine_id for e in events} <= set(pool.ids)
    assert not any(e.ok for e in events if e.function == "fails")
    assert all(e.ok for e in events if e.function != "fails")
    square = [e for e in events if e.function == "slow_square"]
    assert sum(e.end - e.start for e in square) >= 30 * 0.01  # the engines' own run times
    maps = pool.core.task_events.maps()
    assert maps[-1]["label"] == "pool.map(slow_square)"
    assert (maps[-1]["done"], maps[-1]["total"], maps[-1]["ok"]) == (30, 30, True)
    # the engine hooks' own messages (agents, limits) are no user tasks
    assert not {e.function for e in events} & {"install", "apply_engine_limits"}


def test_the_pools_process_publishes_while_a_page_asks_and_runs_its_actions(
    pool: pxpool.Pool,
) -> None:
    assert pool.dashboard_url is None  # no Jupyter server with the extension runs this process
    directory = _runtime.pool_dir(pool.name) / files.DIRECTORY
    assert files.read_state(pool.name) is None  # nobody asked: nothing written
    assert files.touch_want(pool.name)
    wait_for(lambda: files.read_state(pool.name) is not None, 10.0)
    state = files.read_state(pool.name)
    assert state is not None and state["pool"] == pool.name and state["state"] == "running"
    assert [row["engine_id"] for row in state["engines"]] == pool.ids
    assert {row["state"] for row in state["engines"]} == {"idle"}
    assert state["events"] and state["maps"]
    assert oct(directory.stat().st_mode & 0o777) == oct(0o700)
    assert oct((directory / files.STATE).stat().st_mode & 0o777) == oct(0o600)

    request_id = files.post_request(pool.name, {"action": "scale", "n": "three"})
    assert request_id is not None
    wait_for(lambda: (directory / files.REQUESTS / f"{request_id}.reply.json").exists(), 10.0)
    reply = files.read_reply(pool.name, request_id)
    assert reply is not None and reply["ok"] is False
    assert reply["error"] == "ValueError: n must be a whole number >= 0; got 'three'"
    assert pool.engines == 2  # the refused action changed nothing
