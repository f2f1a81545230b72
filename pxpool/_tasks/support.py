"""Small pieces of the lane's dispatcher: what keeps a pool from being released as idle,
what a timeout's stop waits on and the error it gives, the error a failed task becomes,
a settled task's record in the task stream, and the lane's load."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._core.client import ResultTooLarge, TaskError
from ..errors import TaskTimeout

if TYPE_CHECKING:
    from .._core.events import TaskEvents
    from .._reliability.timeouts import TaskGuard
    from .board import Task

__all__ = ["Activity", "Ended", "LaneLoad", "record_settled", "stopped_error", "task_error"]


class Activity(Protocol):
    """What keeps a pool from being released as idle (``IdleWatch``)."""

    def enter(self) -> bool: ...

    def leave(self, counted: bool) -> None: ...

    def wake_if_released(self) -> None: ...


@dataclass(frozen=True)
class LaneLoad:
    """One look at the lane, for adaptive pools (:mod:`pxpool._adapt.load`)."""

    queued: int = 0  # tasks on the client waiting for an engine
    in_flight: dict[int, int] = field(default_factory=dict)  # engine id -> tasks sent to it
    task_seconds: float | None = None  # running estimate of a task's run time


class Ended:
    """What ``TaskGuard.stop_task`` waits on: the stopped task's reply arriving."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)


def stopped_error(guard: TaskGuard, engine_id: int, task: Task, ended: Ended) -> TaskTimeout:
    """Stop ``task``, past its timeout on ``engine_id``, as ``pool.apply`` would
    (interrupt, then replace the engine); the error its future gets."""
    assert task.timeout is not None
    try:
        action = guard.stop_task(ended, engine_id)
        return TaskTimeout(task.label, engine_id, task.timeout, action)
    except Exception as exc:
        error = TaskTimeout(task.label, engine_id, task.timeout, "replaced")
        error.__cause__ = exc
        return error


def record_settled(events: TaskEvents, task: Task, ok: bool) -> None:
    """A settled task into the pool's ring of task events (on the lane's thread): it
    ran ``task.ran`` seconds by its engine's clock; one that brought no reply (its
    engine died, its timeout stopped it) from its hand-over to now."""
    engine_id = task.future.engine_id
    if engine_id is None:
        return  # never ran
    end = time.time()
    if task.ran is not None:
        start = end - task.ran
    else:
        start = end - max(0.0, time.monotonic() - task.placed) if task.placed else end
    events.record(engine_id, task.name, start, end, ok, "lane")


def task_error(label: str, engine_id: int, content: dict[str, Any]) -> Exception:
    """The error of a task that failed on ``engine_id`` (its reply's content): what
    ``pool.apply`` raises for the same failure, naming the task too."""
    ename, evalue = str(content.get("ename")), str(content.get("evalue"))
    traceback = "\n".join(str(line) for line in content.get("traceback") or [])
    if ename == "ResultTooLarge":
        info = {"engine_id": engine_id, "method": "submit"}
        return ResultTooLarge(ename, evalue, traceback, info)
    return TaskError(label, engine_id, ename, evalue, traceback)
