"""TaskFuture: what ``pool.submit`` returns, a real ``concurrent.futures.Future``.

Being a real Future is the point: ``concurrent.futures.wait``/``as_completed`` (also
exported as ``pxpool.wait``/``pxpool.as_completed``), executors' callers, joblib and
asyncio (``await fut``, ``asyncio.wrap_future``) accept it as it is.

A queued task is ``PENDING``: ``cancel()`` succeeds and it never runs. The lane marks
it ``RUNNING`` when it hands it to an engine (at most a few per engine at a time); from
then on ``cancel()`` returns False, as for any Future. Callbacks run on the lane's
thread: keep them short and never wait in one for another task of the same pool.

What the task printed on its engine is printed in the client, in the thread that asks
for the outcome, the first time ``result()`` returns or raises (``pool.apply``,
``await fut``, executors and joblib call it), under ipyparallel's ``[stdout:N]``
heading; ``stdout`` and ``stderr`` hold it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from concurrent.futures import Future, as_completed, wait
from typing import Any

from .printed import show

__all__ = ["TaskFuture", "as_completed", "wait"]


class TaskFuture(Future[Any]):
    """The future of one ``pool.submit`` task.

    ``task`` names it in errors (``pool.submit(f) #7``); ``engine_id`` is the engine
    running it (None while queued; the last engine tried when it was retried)."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task
        self.engine_id: int | None = None
        self.stdout = ""  # what the task printed (its run that gave the result)
        self.stderr = ""
        self._printed_by: int | None = None
        self._shown = True  # nothing to show until output comes

    def set_printed(self, engine_id: int, printed: list[str]) -> None:
        """The lane: what the task printed on ``engine_id`` (``[stdout, stderr]``); a
        later copy's output, once the outcome is set, is not its outcome's."""
        if self.done():
            return
        self.stdout, self.stderr = (list(printed) + ["", ""])[:2]
        self._printed_by, self._shown = engine_id, False

    def show_output(self) -> None:
        """Print what the task printed, once, as ipyparallel shows a task's output."""
        if not self._shown and self.done():
            self._shown = True
            show(self._printed_by, self.stdout, self.stderr)

    def result(self, timeout: float | None = None) -> Any:
        """The task's result (or its error raised); its output is printed first, once."""
        try:
            return super().result(timeout)
        finally:
            self.show_output()

    def __repr__(self) -> str:
        where = "" if self.engine_id is None else f" engine={self.engine_id}"
        return f"<TaskFuture {self.task}{where} {super().__repr__().split(' state=')[-1]}"

    def __await__(self) -> Generator[Any, None, Any]:
        """``await fut`` in async code (a notebook cell with top-level await): the
        kernel's loop keeps serving while the task runs."""
        return asyncio.wrap_future(self).__await__()
