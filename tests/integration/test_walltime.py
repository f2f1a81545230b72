"""Engines drain on walltime and preemption signals: they finish their task, hand new
ones back, leave the pool cleanly, show ``draining`` then ``stopped (walltime)``, and
are not restarted as failures. On real SLURM and SGE, a job with a 1-minute walltime
drains and a replacement job (``replace_on_walltime``) takes over a running ``pool.map``."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

import pxpool
from pxpool._reliability import walltime as _walltime

from .batch_helpers import SGE_QUEUE, SLURM_PARTITION, need, need_sge, sge_jobs, slurm_jobs
from .waits import wait_until

pytestmark = pytest.mark.integration


def slow_square(x: int) -> tuple[int, int, str]:
    import os
    import time

    time.sleep(0.25)
    return x * x, os.getpid(), os.environ.get("SLURM_JOB_ID", os.environ.get("JOB_ID", ""))


def watch_states(pool: pxpool.Pool, engine_id: int, stop: threading.Event) -> list[str]:
    """Collect the distinct states ``engine_id`` goes through, in order, until ``stop``."""
    seen: list[str] = []

    def run() -> None:
        while not stop.is_set():
            for snapshot in pool.health_snapshots():
                if snapshot.engine_id == engine_id and (not seen or seen[-1] != snapshot.state):
                    seen.append(snapshot.state)
            time.sleep(0.02)

    threading.Thread(target=run, daemon=True).start()
    return seen


def test_signalled_engines_finish_their_task_and_leave_without_a_restart() -> None:
    """Engine 0 gets SIGUSR1 (a walltime warning), engine 1 SIGTERM (preemption), both
    while running a task of a map; engine 2 is left to finish it."""
    pool = pxpool.Pool.from_profile("local", engines=3, restart="on-failure", restart_backoff=0.1)
    with pool:
        pids = dict(zip(pool.ids, pool.view().apply(os.getpid), strict=True))
        pool.health()  # agents report from here on
        stop = threading.Event()
        states = {i: watch_states(pool, i, stop) for i in (0, 1)}
        results: list[Any] = []
        mapper = threading.Thread(
            target=lambda: results.append(pool.map(slow_square, range(12), chunksize=1))
        )
        mapper.start()
        wait_until(
            lambda: all("busy" in s for s in states.values()),
            10,
            "engines 0, 1 run tasks",
            tolerate_errors=False,
        )
        os.kill(pids[0], signal.SIGUSR1)
        os.kill(pids[1], signal.SIGTERM)
        mapper.join(timeout=30)
        assert not mapper.is_alive()
        for seen in states.values():
            wait_until(
                lambda s=seen: s[-1] == "stopped (walltime)",
                10,
                f"stopped: {states}",
                tolerate_errors=False,
            )
        time.sleep(0.5)  # a restart would have begun by now (restart_backoff = 0.1)
        stop.set()

        squares = [square for square, _, _ in results[0]]
        assert squares == [x * x for x in range(12)]  # every result, once, in order
        ran_on = {pid for _, pid, _ in results[0]}
        assert {pids[0], pids[1], pids[2]} == ran_on  # the tasks in flight finished
        records = _walltime.drain_records(pool.name)
        deaths = pool.engine_deaths()
        for engine_id, signum in ((0, signal.SIGUSR1), (1, signal.SIGTERM)):
            seen = states[engine_id]
            assert seen[seen.index("draining") - 1] == "busy", seen
            assert seen[-2:] == ["draining", "stopped (walltime)"], seen
            assert (records[engine_id]["signal"], records[engine_id]["state"]) == (
                signum.name,
                "left",
            )
            assert deaths[engine_id] == f"stopped (walltime): drained on {signum.name}"
        assert pool.ids == [2]
        assert pool.apply(slow_square, 3)[0] == 9  # the pool goes on with engine 2
        panel = pool.panel(refresh=60)  # a drained row: its badge, and no live actions
        try:
            row = panel.rows[0]
            assert "pxpool-state-stopped-walltime" in row.state.get_state()["_dom_classes"]
            assert [b.disabled for b in row.buttons if b.description != "restart"] == [True, True]
        finally:
            panel.close()


BATCH_CASES = {
    # SLURM's 30-s timer sends --signal up to ~30 s before the lead: 10-40 s into the
    # job, after its engine registered
    "slurm": {"partition": SLURM_PARTITION, "walltime_signal": 20},
    # SGE sends SIGUSR1 when s_rt (walltime - lead) passes: 15 s into the job
    "sge": {"queue": SGE_QUEUE, "walltime_signal": 45},
}


def batch_jobs(system: str, pool_name: str) -> list[str]:
    return slurm_jobs(pool_name) if system == "slurm" else sge_jobs(pool_name)


@pytest.mark.parametrize("system", sorted(BATCH_CASES))
def test_a_job_drains_before_its_walltime_and_a_replacement_takes_over(system: str) -> None:
    """One engine in a job with a 1-minute walltime, signalled before it: a map over a
    stream of items runs across the drain, and its last items run on the engine of the
    replacement job (``replace_on_walltime``)."""
    if system == "slurm":
        need("sbatch", "run `bash infra/up.sh` first")
    else:
        need_sge()
    pool = pxpool.Pool.from_profile(
        system,
        engines=1,
        walltime="00:01:00",
        replace_on_walltime=True,
        start_timeout=60,
        **BATCH_CASES[system],
    )
    with pool:
        first_job = pool.provider.job_id_of(0)
        pool.health()
        stop = threading.Event()
        states = watch_states(pool, 0, stop)

        def items() -> Any:  # until 20 items after engine 0 left, at most ~100 s of work
            left_at = None
            for x in range(400):
                if left_at is None and "stopped (walltime)" in states:
                    left_at = x
                if left_at is not None and x >= left_at + 20:
                    return
                yield x

        results = pool.map(slow_square, items(), chunksize=1)
        stop.set()

        count = len(results)
        assert [square for square, _, _ in results] == [x * x for x in range(count)]
        jobs = [job for _, _, job in results]
        assert jobs[0] == first_job and jobs[-1] != first_job, jobs  # finished elsewhere
        assert states[-2:] == ["draining", "stopped (walltime)"], states
        record = _walltime.drain_records(pool.name)[0]
        assert (record["signal"], record["state"]) == ("SIGUSR1", "left")
        assert 0 not in pool.ids and pool.ids  # (the replacement may be draining already)
        wait_until(
            lambda: not any(line.split()[0] == first_job for line in batch_jobs(system, pool.name)),
            15,
            "the drained job left the queue",
            tolerate_errors=False,
        )
    assert batch_jobs(system, pool.name) == []
