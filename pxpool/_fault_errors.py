"""Errors of fault handling: tasks that ran too long, engines that died under a task.

PxpoolError
├── TaskTimeout     a task ran longer than its ``timeout=``; its engine was stopped
└── EngineDied      the engine running a task died (says how: signal, exit code, OOM)
    └── TaskLost    ...and the task's retries on other engines are used up
"""

from __future__ import annotations

from .errors import PxpoolError

__all__ = ["TaskTimeout", "EngineDied", "TaskLost"]


class TaskTimeout(PxpoolError, TimeoutError):
    """A task ran longer than its ``timeout``; ``action`` says what was done to its
    engine: ``"interrupted"`` (SIGINT ended the task) or ``"replaced"`` (the engine
    did not yield, so it was killed and a new one started under the same id)."""

    def __init__(self, task: str, engine_id: int | None, timeout: float, action: str) -> None:
        self.task = task
        self.engine_id = engine_id
        self.timeout = timeout
        self.action = action
        done = (
            "it was interrupted with SIGINT"
            if action == "interrupted"
            else "it did not yield to SIGINT, so it was killed and replaced under the same id"
        )
        super().__init__(
            f"{task} ran longer than timeout={timeout:g}s on engine {engine_id}; {done}. "
            "Raise the timeout, or cut the work into smaller pieces (pool.map chunks)."
        )


class EngineDied(PxpoolError, RuntimeError):
    """The engine running ``task`` died; ``how`` is e.g. ``"killed by SIGKILL"``."""

    def __init__(self, task: str, engine_id: int | None, how: str, retried: int = 0) -> None:
        self.task = task
        self.engine_id = engine_id
        self.how = how
        self.retried = retried
        tries = (
            f" after {retried} retr{'y' if retried == 1 else 'ies'} on other engines"
            if retried
            else ""
        )
        super().__init__(
            f"{task} was lost{tries}: engine {engine_id} died while running it ({how}). "
            "See `pool.health()` for the engine's history; pass retries=N to retry on "
            'other engines, or restart = "on-failure" in the profile to replace engines.'
        )


class TaskLost(EngineDied):
    """A load-balanced task or map chunk whose retries are used up."""
