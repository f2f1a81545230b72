"""Tasks lost with their engine wait a moment for the word on how it died.

The lane learns that an engine left from the hub, which its nanny tells at once; the
supervisor learns how it died (killed, out of memory, its exit code) from the process's
exit report, which can come a few milliseconds later. A task failed at once would name
the death "it stopped answering" when "out of memory" was about to be known. So the
lane holds the tasks it fails for good (:class:`DeathReports`) until a death of their
engine is recorded since it left, at most ``DEATH_REPORT_WAIT`` seconds (the lane's
thread cannot block: it looks every tick; other callers use
:meth:`~pxpool._reliability.supervisor.Supervisor.wait_for_death`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .._reliability.supervisor import DEATH_REPORT_WAIT
from ..errors import EngineDied, TaskLost


class Deaths(Protocol):
    """The supervisor's side (:class:`pxpool._reliability.supervisor.Supervisor`)."""

    def death_since(self, engine_id: int, left_at: float) -> str | None: ...

    def how_died(self, engine_id: int | None) -> str: ...


class DeathReports:
    """Held tasks: (engine id, when it left, deadline, tasks)."""

    def __init__(self, deaths: Deaths) -> None:
        self.deaths = deaths
        self.held: list[tuple[int, float, float, list[Any]]] = []

    def hold(self, engine_id: int, tasks: list[Any]) -> None:
        if tasks:
            deadline = time.monotonic() + DEATH_REPORT_WAIT
            self.held.append((engine_id, time.time(), deadline, tasks))

    def fail_ready(self, settle: Callable[..., None]) -> None:
        """Fail the tasks of :meth:`ready` (``settle(task, error=...)``, on the lane's thread)."""
        for engine_id, how, tasks in self.ready():
            for task in tasks:
                cls = TaskLost if task.retries else EngineDied
                settle(task, error=cls(task.label, engine_id, how, task.lost - 1))

    def ready(self) -> Iterator[tuple[int, str, list[Any]]]:
        """(engine id, how it died, tasks) for each engine whose death is known now, or
        whose wait is over (then as the supervisor tells it, maybe not knowing)."""
        now, waiting = time.monotonic(), []
        for entry in self.held:
            engine_id, left_at, deadline, tasks = entry
            how = self.deaths.death_since(engine_id, left_at)
            if how is None and now < deadline:
                waiting.append(entry)
                continue
            yield engine_id, how or self.deaths.how_died(engine_id), tasks
        self.held = waiting

    def drain(self) -> list[Any]:
        """Every held task (the lane is closing: they fail with its reason)."""
        tasks = [task for entry in self.held for task in entry[3]]
        self.held = []
        return tasks
