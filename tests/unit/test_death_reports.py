"""Tasks lost with their engine are failed once the supervisor says how it died."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from pxpool import EngineDied, TaskLost
from pxpool._reliability import supervisor as _supervisor
from pxpool._tasks import death_reports
from pxpool._tasks.death_reports import DeathReports


class Supervisor:
    """The two answers the lane asks of pxpool's supervisor, as plain data."""

    def __init__(self) -> None:
        self.deaths: dict[int, tuple[str, float]] = {}

    def death_since(self, engine_id: int, left_at: float) -> str | None:
        how, when = self.deaths.get(engine_id, ("", 0.0))
        return how if when >= left_at - _supervisor.DEATH_SLACK else None

    def how_died(self, engine_id: int | None) -> str:
        known = self.deaths.get(engine_id) if engine_id is not None else None
        return known[0] if known else "it stopped answering and the controller dropped it"


def task(retries: int = 0) -> Any:
    return SimpleNamespace(label="pool.submit(f) #1", retries=retries, lost=retries + 1)


def test_the_tasks_wait_for_the_report_of_the_death() -> None:
    supervisor = Supervisor()
    reports = DeathReports(supervisor)
    held = [task(), task(retries=1)]
    reports.hold(3, held)
    assert list(reports.ready()) == []  # not known yet: still held
    supervisor.deaths[3] = ("out of memory: the kernel's OOM killer ended it", time.time())
    failed: list[tuple[Any, BaseException]] = []
    reports.fail_ready(lambda t, error: failed.append((t, error)))
    assert [t for t, _ in failed] == held and reports.held == []
    assert isinstance(failed[0][1], EngineDied) and "out of memory" in str(failed[0][1])
    assert isinstance(failed[1][1], TaskLost) and "out of memory" in str(failed[1][1])


def test_an_old_death_of_the_same_id_is_not_this_one_and_the_wait_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(death_reports, "DEATH_REPORT_WAIT", 0.2)
    supervisor = Supervisor()
    supervisor.deaths[1] = ("killed by SIGKILL", time.time() - 60)  # an earlier engine 1
    reports = DeathReports(supervisor)
    reports.hold(1, [task()])
    assert list(reports.ready()) == []
    time.sleep(0.25)
    [(engine_id, how, tasks)] = list(reports.ready())
    assert (engine_id, how, len(tasks)) == (1, supervisor.how_died(1), 1)


def test_a_closing_lane_takes_the_held_tasks() -> None:
    reports = DeathReports(Supervisor())
    reports.hold(0, [task(), task()])
    reports.hold(1, [])  # nothing lost there: nothing held
    assert len(reports.drain()) == 2 and reports.held == []


def test_the_hub_routes_lost_task_waits_for_the_report_too() -> None:
    """ipyparallel's views and maps off the lane: TaskGuard.lost_error waits on the
    supervisor's record of deaths (a condition, not a poll)."""
    import threading

    from pxpool._reliability.supervisor import Death, Supervisor
    from pxpool._reliability.timeouts import TaskGuard

    supervisor = Supervisor.__new__(Supervisor)  # only its record of deaths is used
    supervisor.deaths = {}
    supervisor._recorded = threading.Condition()  # noqa: SLF001 - set as __init__ does
    guard = TaskGuard(core=None, supervisor=supervisor)  # type: ignore[arg-type]
    ar = SimpleNamespace(engine_id=2)  # the engine it ran on, from its first output
    oom = "out of memory: the kernel's OOM killer ended it"

    def report() -> None:  # the exit report comes a moment later
        supervisor._record(Death((2,), oom, -9, time.time()))  # noqa: SLF001

    threading.Timer(0.1, report).start()
    began = time.monotonic()
    error = guard.lost_error(ar, "pool.map(f) chunk of rows 0..9", 0)  # type: ignore[arg-type]
    assert isinstance(error, EngineDied) and "out of memory" in str(error)
    assert time.monotonic() - began < _supervisor.DEATH_REPORT_WAIT  # woken, not timed out
