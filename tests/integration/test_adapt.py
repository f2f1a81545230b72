"""Adaptive pools on real engines (issue #19): a burst of 200 tasks of 0.2 s through
``pool.submit`` grows a local pool to its maximum, the new engines run the queued tasks
with the pool's setup replayed, idle engines stop within the threshold after, and no
look both starts and stops engines; with SLURM jobs of 2 engines each, the pool grows by
whole jobs and, with ``minimum=0``, releases every job when idle. Adapting stops with
the pool and leaves no task or thread."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from concurrent.futures import wait

import cloudpickle
import pytest

import pxpool
from pxpool._adapt.adaptive import TASK_PREFIX
from pxpool._adapt.policy import Action, Decision
from pxpool.panel import Panel

from .batch_helpers import SLURM_PARTITION, need, slurm_jobs
from .waits import wait_until

pytestmark = pytest.mark.integration
# engines cannot import this test module: its functions travel by value, as a notebook's
cloudpickle.register_pickle_by_value(sys.modules[__name__])

IDLE = 2.0  # seconds an engine set stays idle before it stops
INTERVAL = 0.5  # seconds between looks
GROW_WAIT = 60.0  # seconds for the pool to reach its maximum
RESULT_WAIT = 90.0  # seconds for a whole burst's results
STOP_MARGIN = 5.0  # seconds a removal may take beyond the idle threshold and one look


def work(x: int) -> float:
    """0.2 s of work that uses the pool's setup (a pushed name and a setup cell)."""
    time.sleep(0.2)
    return offset + math.sqrt(x * x)  # type: ignore[name-defined]  # noqa: F821


async def task_names() -> list[str]:
    return [task.get_name() for task in asyncio.all_tasks()]


def pool_threads(pool: pxpool.Pool) -> list[str]:
    """Threads of this pool other than its event loop (which lives as long as the object)."""
    return [
        t.name
        for t in threading.enumerate()
        if pool.name in t.name and t is not pool.core.loop.thread and t.is_alive()
    ]


def assert_never_started_and_stopped_in_one_look(decisions: list[Decision]) -> None:
    """No look both started and stopped engines; engines stopped at least IDLE after
    the look that started them."""
    by_cycle: dict[int, set[Action]] = {}
    started: dict[int, Decision] = {}
    for decision in decisions:
        if decision.action in (Action.GROW, Action.SHRINK, Action.RELEASE):
            by_cycle.setdefault(decision.cycle, set()).add(decision.action)
        if decision.action is Action.GROW:
            started.update(dict.fromkeys(decision.engine_ids, decision))
        if decision.action in (Action.SHRINK, Action.RELEASE):
            for engine_id in decision.engine_ids:
                if engine_id in started:
                    grow = started[engine_id]
                    assert decision.cycle > grow.cycle
                    assert decision.time - grow.time >= IDLE, (grow, decision)
    assert all(len(actions) == 1 for actions in by_cycle.values()), by_cycle


def test_a_burst_grows_a_local_pool_to_its_maximum_and_idle_engines_stop_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pxpool.adapt")
    pool = pxpool.Pool.from_profile("local", engines=1)
    with pytest.raises(pxpool.PoolStateError, match=r"start it .* before `pool.adapt"):
        pool.adapt(maximum=2)
    with pool:
        with pytest.raises(ValueError, match=r"maximum=1 must be >= minimum=2"):
            pool.adapt(minimum=2, maximum=1)
        assert pool.adapt_decisions == []  # nothing started by bad settings
        pool.push({"offset": 100})
        pool.setup("import math")
        pool.adapt(minimum=1, maximum=4, target_seconds=1.0, idle_seconds=IDLE, interval=INTERVAL)
        futures = [pool.submit(work, i) for i in range(200)]
        wait_until(lambda: pool.engines == 4, GROW_WAIT, "the pool grew to 4 engines")
        done, _ = wait(futures, RESULT_WAIT)
        assert len(done) == 200
        finished = time.monotonic()
        assert [f.result() for f in futures] == [100.0 + i for i in range(200)]
        assert len({f.engine_id for f in futures}) == 4  # new engines took queued tasks
        wait_until(
            lambda: pool.engines == 1 and not pool.core.operations.snapshot(),
            IDLE + INTERVAL + STOP_MARGIN + 10,
            "the idle engines stopped",
            interval=0.05,
        )
        shrank_after = time.monotonic() - finished
        assert shrank_after <= IDLE + 2 * INTERVAL + STOP_MARGIN, shrank_after

        decisions = pool.adapt_decisions
        actions = [d.action for d in decisions]
        assert actions[0] is Action.ON and Action.FAILED not in actions
        grows = [d for d in decisions if d.action is Action.GROW]
        shrinks = [d for d in decisions if d.action is Action.SHRINK]
        assert sum(d.count for d in grows) == 3 and sum(d.count for d in shrinks) == 3
        assert max(d.engines + d.count for d in grows) == 4
        assert_never_started_and_stopped_in_one_look(decisions)
        assert any("grow 3 engine(s)" in r.getMessage() for r in caplog.records)

        panel = Panel(pool, refresh=0)  # the panel's line: the latest decision
        assert "adapt:" in panel.adapt.value and "shrink" in panel.adapt.value
        panel.close()

        pool.adapt(False)
        assert pool.adapt_decisions[-1].action is Action.OFF
        names = pool.core.loop.submit(task_names()).result(5)
        assert f"{TASK_PREFIX}{pool.name}" not in names
        pool.adapt(minimum=1, maximum=2, idle_seconds=IDLE, interval=INTERVAL)  # on again
        assert f"{TASK_PREFIX}{pool.name}" in pool.core.loop.submit(task_names()).result(5)
    assert pool.adapt_decisions[-1].action is Action.OFF  # it stopped with the pool
    assert f"{TASK_PREFIX}{pool.name}" not in pool.core.loop.submit(task_names()).result(5)
    assert pool_threads(pool) == []


def test_slurm_pool_from_no_engines_grows_by_whole_jobs_and_releases_them_when_idle() -> None:
    need("sbatch", "run `bash infra/up.sh` first")
    pool = pxpool.Pool.from_profile(
        "slurm", partition=SLURM_PARTITION, engines_per_job=2, launcher="plain", start_timeout=60
    )
    pool.start_sync(engines=0)
    try:
        pool.record_setup_code("import math\noffset = 100")  # replayed on every job's engines
        pool.adapt(minimum=0, maximum=4, target_seconds=1.0, idle_seconds=IDLE, interval=INTERVAL)
        futures = [pool.submit(work, i) for i in range(60)]
        wait_until(lambda: len(slurm_jobs(pool.name)) == 2, GROW_WAIT, "two jobs submitted")
        done, _ = wait(futures, RESULT_WAIT)
        assert len(done) == 60
        assert [f.result() for f in futures] == [100.0 + i for i in range(60)]
        assert {f.engine_id for f in futures} <= {0, 1, 2, 3}
        wait_until(lambda: pool.state == "idle", IDLE + STOP_MARGIN + 20, "the pool released")
        wait_until(lambda: not slurm_jobs(pool.name), 20, "squeue lists none of its jobs")
        decisions = pool.adapt_decisions
        grows = [d for d in decisions if d.action is Action.GROW]
        assert [(d.count, d.engine_ids) for d in grows] == [(4, (0, 1, 2, 3))]  # 2 jobs
        stops = [d for d in decisions if d.action in (Action.SHRINK, Action.RELEASE)]
        assert stops[-1].action is Action.RELEASE  # the last job goes as an idle release
        assert sorted(i for d in stops for i in d.engine_ids) == [0, 1, 2, 3]
        assert all(d.count == 2 * len(d.sets) for d in stops)  # whole jobs
        assert Action.FAILED not in [d.action for d in decisions]
        assert_never_started_and_stopped_in_one_look(decisions)
    finally:
        pool.stop_sync()
    wait_until(lambda: not slurm_jobs(pool.name), 20, "squeue lists none of its jobs")
    assert pool_threads(pool) == []
