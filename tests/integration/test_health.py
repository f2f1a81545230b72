"""The health model on real engines: states, counters and timings of pool.health()."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import ipyparallel as ipp
import pandas
import pytest

import pxpool
from pxpool.health import COLUMNS, STATES

from .waits import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    """One pool for the tests that keep its engines alive; the last one stops it."""
    with pxpool.Pool.from_profile("local", engines=3) as running:
        yield running


@pytest.fixture
def own_pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=3) as running:
        yield running


def states(pool: pxpool.Pool) -> list[str]:
    return list(pool.health()["state"])


def failing() -> None:
    raise ValueError("on purpose")


def test_health_has_the_documented_columns_and_one_idle_row_per_engine(
    pool: pxpool.Pool,
) -> None:
    frame = pool.health()
    assert isinstance(frame, pandas.DataFrame)
    assert tuple(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert list(frame["engine_id"]) == [0, 1, 2]
    assert states(pool) == ["idle"] * 3
    pids = pool.view().apply_sync(os.getpid)
    assert list(frame["pid"]) == pids
    assert frame["job_id"].isna().all()  # local engines run in no batch job
    assert (frame["rss_bytes"] > 10_000_000).all()
    assert (frame["rss_peak_bytes"] >= frame["rss_bytes"]).all()
    assert (frame["pss_bytes"] > 1_000_000).all()  # shared pages counted in part
    assert (frame["pss_bytes"] <= frame["rss_bytes"] * 1.05).all()
    assert (frame["heartbeat_age_s"] < 1.5).all()
    assert (frame["uptime_s"] > 0).all()
    assert frame["fingerprint"].nunique() == 1 and len(frame["fingerprint"][0]) == 10
    summary = pool.health_summary()
    assert summary.pop("core_hours") > 0  # 3 engines x their time so far
    assert summary == {**dict.fromkeys(STATES, 0), "idle": 3}


def test_a_running_task_shows_busy_with_its_function_and_is_counted(pool: pxpool.Pool) -> None:
    time.sleep(1.0)  # agents report every 0.5 s: let tasks of earlier tests be counted first
    before = pool.health().set_index("engine_id")
    result = pool.client[0].apply_async(time.sleep, 2.5)
    wait_until(lambda: states(pool)[0] == "busy", 2.0, "engine 0 shown busy", tolerate_errors=False)
    row = pool.health().set_index("engine_id").loc[0]
    assert row["task_label"] == "sleep"
    assert row["task"] == f"sleep [{result.msg_ids[0][:8]}]"
    began = time.perf_counter()
    pool.health()  # cheap while the engine is busy: no round trip through it
    assert time.perf_counter() - began < 0.2
    result.get(timeout=10)
    with pytest.raises(Exception, match="on purpose"):
        pool.client[1].apply_sync(failing)
    wait_until(
        lambda: states(pool)[:2] == ["idle", "idle"],
        2.0,
        "engines 0 and 1 shown idle again",
        tolerate_errors=False,
    )
    after = pool.health().set_index("engine_id")
    assert after.loc[0, "tasks_done"] == before.loc[0, "tasks_done"] + 1
    assert after.loc[1, "tasks_failed"] == before.loc[1, "tasks_failed"] + 1
    assert after.loc[0, "task"] is None


def test_restart_goes_restarting_then_idle_and_stop_marks_every_row_stopped(
    pool: pxpool.Pool,
) -> None:
    old_pid = int(pool.health()["pid"][2])
    seen: list[str] = []
    slow_once = [2]  # a slow setup replay: the new process reports while the restart runs

    def slow_setup(_pool: pxpool.Pool, engine_ids: list[int]) -> None:
        if slow_once and engine_ids == slow_once:
            slow_once.clear()
            time.sleep(2.5)

    pool.add_engine_hook(slow_setup)
    restart = pool.core.loop.submit(pool.restart(2))
    while not restart.done():
        seen.append(states(pool)[2])
        time.sleep(0.02)
    restart.result()
    wait_until(lambda: states(pool)[2] == "idle", 3.0, "engine 2 shown idle", tolerate_errors=False)
    assert "restarting" in seen
    assert set(seen) <= {"idle", "restarting"}
    assert int(pool.health()["pid"][2]) != old_pid
    pool.scale_sync(2)
    assert states(pool) == ["idle", "idle", "stopped"]
    pool.stop_sync()
    assert states(pool) == ["stopped"] * 3


def test_killed_engine_is_dead_within_5s_and_stopped_engine_unresponsive(
    own_pool: pxpool.Pool,
) -> None:
    pool = own_pool
    pool.health()
    pids = pool.view().apply_sync(os.getpid)
    busy = pool.client[1].apply_async(time.sleep, 30)
    wait_until(lambda: states(pool)[1] == "busy", 2.0, "engine 1 shown busy", tolerate_errors=False)
    os.kill(pids[1], signal.SIGKILL)
    os.kill(pids[2], signal.SIGSTOP)
    try:
        began = time.monotonic()
        wait_until(
            lambda: states(pool)[1] == "dead", 5.0, "engine 1 shown dead", tolerate_errors=False
        )
        dead_after = time.monotonic() - began
        began = time.monotonic()
        wait_until(
            lambda: states(pool)[2] == "unresponsive",
            5.0,
            "engine 2 shown unresponsive",
            tolerate_errors=False,
        )
        hung_after = time.monotonic() - began
        frame = pool.health().set_index("engine_id")
        assert frame.loc[0, "state"] == "idle"
        assert frame.loc[1, "tasks_failed"] >= 1  # the task it died in
        assert frame.loc[2, "heartbeat_age_s"] > 1.0
        assert list(frame.index) == [0, 1, 2]  # the dead engine keeps its row
        assert pool.health_summary()["dead"] == 1
    finally:
        os.kill(pids[2], signal.SIGCONT)
    with pytest.raises(ipp.error.RemoteError, match="Engine 1 died while running task"):
        busy.get(timeout=5)
    assert dead_after < 5.0 and hung_after < 5.0


def test_pxpool_status_prints_the_health_table() -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pxpool.cli", *args], capture_output=True, text=True, timeout=60
        )

    started = cli("start", "local", "-n", "2", "--name", "health-cli")
    try:
        assert started.returncode == 0, started.stderr
        status = cli("status", "health-cli")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[1].split() == list(COLUMNS)
        rows = [line.split() for line in lines[2:]]
        assert [row[0] for row in rows] == ["0", "1"]
        assert all(row[4] == "idle" for row in rows)
    finally:
        cli("stop", "health-cli")
