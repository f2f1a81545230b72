"""Idle shutdown: a pool without work for ``idle_timeout`` releases its engines (batch
jobs cancelled, controller kept), and the next use starts them again, replays the
setup and returns correct results; core-hours count the engines' time. Real local
engines, a real IPython shell for ``%%px``, and real SLURM jobs (``infra/up.sh``)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
import time

import ipyparallel as ipp
import psutil
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import pxpool
from pxpool._reliability import idle
from pxpool.errors import EngineStartError, PoolStateError

from .batch_helpers import SLURM_PARTITION, need, slurm_jobs
from .waits import wait_until

pytestmark = pytest.mark.integration

IDLE_WAIT = 30.0  # seconds a test waits for a release it expects


@ipp.interactive
def scaled(x: int) -> float:
    """Uses what the pool's setup left on the engines: a pushed name and a setup cell."""
    return offset + scale * math.sqrt(x * x)  # type: ignore[name-defined]  # noqa: F821


async def task_names() -> list[str]:
    """The asyncio tasks on the running loop (the pool's, when submitted to it)."""
    return [task.get_name() for task in asyncio.all_tasks()]


def set_up(pool: pxpool.Pool) -> None:
    pool.push({"offset": 100})
    pool.setup("import math\nscale = 3")


def pool_threads(pool: pxpool.Pool) -> list[str]:
    """Threads of this pool other than its event loop (which lives as long as the object)."""
    return [
        t.name
        for t in threading.enumerate()
        if pool.name in t.name and t is not pool.core.loop.thread and t.is_alive()
    ]


def test_local_pool_releases_idle_engines_and_the_next_map_starts_them_again() -> None:
    pool = pxpool.Pool.from_profile("local", engines=2, idle_timeout=1.5)
    with pool:
        set_up(pool)
        pids = pool.view().apply(os.getpid)
        pool.health_summary()  # health agents on: their rows must show the release
        wait_until(
            lambda: pool.state == "idle",
            IDLE_WAIT,
            "the pool released its engines",
            interval=0.1,
            tolerate_errors=False,
        )
        wait_until(
            lambda: not any(psutil.pid_exists(p) for p in pids),
            10,
            "engines exited",
            interval=0.1,
            tolerate_errors=False,
        )
        assert pool.ids == [] and pool.engines == 0
        assert list(pool.health()["state"]) == ["released", "released"]
        summary = pool.health_summary()
        assert summary["released"] == 2 and summary["idle"] == 0
        released_hours = summary["core_hours"]
        assert released_hours > 0
        time.sleep(0.5)
        assert pool.core_hours() == pytest.approx(released_hours)  # released: no cores held

        status = subprocess.run(
            [sys.executable, "-m", "pxpool", "status", pool.name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert "core-hours" in status.stdout and "released (idle)" in status.stdout
        header, *rows = status.stdout.splitlines()[1:]
        assert [dict(zip(header.split(), row.split(), strict=False))["state"] for row in rows] == [
            "released",
            "released",
        ]

        assert pool.map(scaled, range(6)) == [100.0 + 3 * x for x in range(6)]
        assert pool.state == "running" and pool.ids == [0, 1]
        assert set(pool.view().apply(os.getpid)).isdisjoint(pids)
        time.sleep(0.3)
        assert pool.core_hours() > released_hours  # engines hold cores again
    time.sleep(1.5)  # one check interval: the idle check ends with the pool
    watching = f"{idle.WATCH_TASK_PREFIX}{pool.name}"
    assert watching not in pool.core.loop.submit(task_names()).result(5)
    assert pool_threads(pool) == []


def test_work_keeps_engines_a_failed_restart_is_a_start_error_and_px_wakes_the_pool(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pxpool.Pool.from_profile("local", engines=1, idle_timeout=1.0) as pool:
        set_up(pool)
        result = pool.lbview().apply_async(time.sleep, 3)  # not a pool method: only queued
        time.sleep(2.5)
        assert pool.state == "running"
        result.get(timeout=10)
        wait_until(
            lambda: pool.state == "idle",
            IDLE_WAIT,
            "the pool released its engines",
            interval=0.1,
            tolerate_errors=False,
        )

        profile = pool.provider.profile
        broken = dataclasses.replace(
            profile, engine=dataclasses.replace(profile.engine, python="/bin/false")
        )
        monkeypatch.setattr(pool.provider, "profile", broken)
        with pytest.raises(EngineStartError):
            pool.apply(abs, -2)
        assert pool.state == "idle"
        with pytest.raises(PoolStateError, match=r"released its engines.*wake_sync"):
            pool.scale_sync(2)
        monkeypatch.setattr(pool.provider, "profile", profile)

        assert pxpool.current() is pool  # an idle pool is still the one %px uses
        with capture_output():
            shell.run_cell_magic("px", "", "doubled = 2 * offset + scale")
        assert pool.state == "running"
        assert pool.pull("doubled") == [203]


def test_slurm_pool_cancels_its_jobs_when_idle_and_submits_them_again_on_next_map() -> None:
    need("sbatch", "run `bash infra/up.sh` first")
    pool = pxpool.Pool.from_profile(
        "slurm",
        engines=2,
        partition=SLURM_PARTITION,
        cores_per_engine=2,
        idle_timeout=3,
        start_timeout=60,
    )
    with pool:
        first_jobs = {pool.provider.job_id_of(i) for i in pool.ids}
        assert len(slurm_jobs(pool.name)) == 2
        set_up(pool)
        wait_until(
            lambda: pool.state == "idle",
            IDLE_WAIT,
            "the pool released its engines",
            interval=0.1,
            tolerate_errors=False,
        )
        wait_until(
            lambda: not slurm_jobs(pool.name),
            20,
            "squeue lists none of the pool's jobs",
            interval=0.1,
            tolerate_errors=False,
        )
        released_hours = pool.health_summary()["core_hours"]
        assert released_hours > 0

        assert pool.map(scaled, range(8)) == [100.0 + 3 * x for x in range(8)]
        assert pool.ids == [0, 1]
        jobs = slurm_jobs(pool.name)
        assert len(jobs) == 2 and {line.split()[0] for line in jobs}.isdisjoint(first_jobs)
        time.sleep(0.5)
        assert pool.health_summary()["core_hours"] > released_hours
    wait_until(
        lambda: not slurm_jobs(pool.name),
        20,
        "squeue lists none of the pool's jobs",
        interval=0.1,
        tolerate_errors=False,
    )
