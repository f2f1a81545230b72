"""Long sessions stay flat: a shortened soak (20,000 mixed tasks, results dropped as
they arrive) through one real local pool, ``pool.memory()``, and the controller's
upkeep forgetting old task ids while still counting them. The full soak (200,000 tasks,
20 GB of results) is ``bench/bench_soak.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import ipyparallel as ipp
import pytest

import pxpool

from .waits import wait_until

pytestmark = pytest.mark.integration

KEEP_DONE = 300  # the controller's upkeep, lowered so that a test sees it within seconds
SOAK_TASKS = 20_000
HUB_TASKS = 1200
BLOCK_FLOATS = 2**17  # 1 MB results


def noop(x: Any = None) -> Any:
    return x


def block(i: int) -> Any:
    import numpy

    return numpy.full(BLOCK_FLOATS, float(i))


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    saved = {
        k: os.environ.get(k)
        for k in ("PXPOOL_CONTROLLER_KEEP_DONE", "PXPOOL_CONTROLLER_TRIM_SECONDS")
    }
    os.environ["PXPOOL_CONTROLLER_KEEP_DONE"] = str(KEEP_DONE)  # the controller inherits them
    os.environ["PXPOOL_CONTROLLER_TRIM_SECONDS"] = "0.5"
    try:
        with pxpool.Pool.from_profile("local", engines=2) as started:
            yield started
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rss(pool: pxpool.Pool) -> dict[str, int]:
    frame = pool.memory()
    return {
        role: int(frame[frame.role == role].rss_bytes.iloc[0]) for role in ("client", "controller")
    }


def mixed_round(pool: pxpool.Pool) -> int:
    """Futures, a map, %%px-style cells on the hub's route and 1 MB results; all dropped."""
    for future in [pool.submit(noop, i) for i in range(1000)]:
        future.result(timeout=60)
    pool.map(noop, range(1000), timeout=60)
    for _ in range(5):
        pool.execute("soak_cell = 1")
    assert sum(float(part[0]) for part in pool.map(block, range(8), timeout=60)) == 28.0
    return 2013


def test_memory_reports_client_controller_and_every_engine(pool: pxpool.Pool) -> None:
    frame = pool.memory()
    assert list(frame.role) == ["client", "controller", "engine", "engine"]
    assert frame.rss_bytes.notna().all() and (frame.rss_bytes > 10 * 2**20).all()
    assert frame[frame.role == "controller"].state.iloc[0] == "running"
    assert sorted(frame.engine_id.dropna()) == sorted(pool.ids)


def test_twenty_thousand_mixed_tasks_leave_client_and_controller_memory_flat(
    pool: pxpool.Pool,
) -> None:
    done, baseline, curve = 0, None, []
    while done < SOAK_TASKS:
        done += mixed_round(pool)
        curve.append((done, rss(pool)))
        if baseline is None and done >= SOAK_TASKS // 2:
            baseline = curve[-1][1]
    assert baseline is not None
    print("\n".join(f"{n:>6} tasks: {m}" for n, m in curve))
    for role in ("client", "controller"):
        allowed = max(0.10 * baseline[role], 50 * 2**20)
        assert curve[-1][1][role] - baseline[role] <= allowed, (role, curve)
    assert len(pool.client.history) <= 2 * 10_000  # the client keeps recent task ids only


def test_controller_forgets_old_task_ids_but_still_counts_every_task(pool: pxpool.Pool) -> None:
    view = pool.lbview()

    def counted() -> int:
        return sum(pool.client.queue_status().get(i, {}).get("completed", 0) for i in pool.ids)

    def hub_settled() -> bool:  # earlier tests' tasks all counted as completed
        status = pool.client.queue_status()
        return status.get("unassigned") == 0 and all(status[i]["queue"] == 0 for i in pool.ids)

    wait_until(hub_settled, 10, "the hub to finish counting earlier tasks")
    before = counted()
    # more tasks than the hub's database keeps records of (1,024), so that only the
    # upkeep's trim stands between the oldest id and "No such message"
    results = [view.apply_async(noop, i) for i in range(HUB_TASKS)]
    assert [r.get(timeout=60) for r in results] == list(range(HUB_TASKS))
    oldest, newest = results[0].msg_ids[0], results[-1].msg_ids[0]

    def forgotten() -> bool:
        try:
            pool.client.result_status([oldest], status_only=True)
        except ipp.error.RemoteError as exc:
            return exc.ename == "KeyError" and "No such message" in str(exc.evalue)
        return False

    wait_until(forgotten, 30, "the hub to forget the oldest finished task id")
    # positive control: the newest is known, as completed once the hub has its result
    # (the client may have it first: the scheduler sends it to both)
    wait_until(
        lambda: pool.client.result_status([newest], status_only=True)["completed"] == [newest],
        10,
        "the hub to list the newest task as completed",
    )

    wait_until(lambda: counted() - before == HUB_TASKS, 10, "the hub to count every task")
    assert counted() - before == HUB_TASKS  # counts stay exact for tasks_done
    # the scheduler too: a dependency on a forgotten task is impossible, on a recent one fine
    assert view.apply_async(noop, 1).get(timeout=30) == 1
    with view.temp_flags(after=[newest]):
        assert view.apply_async(noop, 2).get(timeout=30) == 2
    wait_until(
        lambda: _unknown_dependency(view, oldest), 30, "the scheduler to forget the oldest id"
    )


def _unknown_dependency(view: ipp.LoadBalancedView, msg_id: str) -> bool:
    with view.temp_flags(after=[msg_id]):
        try:
            view.apply_async(noop, 3).get(timeout=30)
        except ipp.error.RemoteError as exc:
            return bool(exc.ename == "InvalidDependency")  # an id the scheduler does not know
    return False
