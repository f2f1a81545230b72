"""TaskFuture: what ``pool.submit`` returns, a real ``concurrent.futures.Future``.

Being a real Future is the point: ``concurrent.futures.wait``/``as_completed`` (also
exported as ``pxpool.wait``/``pxpool.as_completed``), executors' callers, joblib and
asyncio (``await fut``, ``asyncio.wrap_future``) accept it as it is.

A queued task is ``PENDING``: ``cancel()`` succeeds and it never runs. The lane marks
it ``RUNNING`` when it hands it to an engine (at most a few per engine at a time); from
then on ``cancel()`` returns False, as for any Future. Callbacks run on the lane's
thread: keep them short and never wait in one for another task of the same pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from concurrent.futures import Future, as_completed, wait
from typing import Any

__all__ = ["TaskFuture", "as_completed", "wait"]


class TaskFuture(Future[Any]):
    """The future of one ``pool.submit`` task.

    ``task`` names it in errors (``pool.submit(f) #7``); ``engine_id`` is the engine
    running it (None while queued; the last engine tried when it was retried)."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task
        self.engine_id: int | None = None

    def __repr__(self) -> str:
        where = "" if self.engine_id is None else f" engine={self.engine_id}"
        return f"<TaskFuture {self.task}{where} {super().__repr__().split(' state=')[-1]}"

    def __await__(self) -> Generator[Any, None, Any]:
        """``await fut`` in async code (a notebook cell with top-level await): the
        kernel's loop keeps serving while the task runs."""
        return asyncio.wrap_future(self).__await__()
