"""``pool.executor()``: a real ``concurrent.futures.Executor`` over the task lane.

Code written for ``ProcessPoolExecutor`` runs unchanged on the pool's engines, wherever
they are: ``submit``, ``map`` (with ``timeout`` and ``chunksize``), ``shutdown(wait,
cancel_futures)`` and ``with`` work as the standard library documents them. The
executor does not own the pool: shutting it down leaves the pool and its engines
running (stop the pool for that).

``map`` queues its calls together: the function is pickled once, as ``map`` is called,
and each call's arguments as the call is sent to an engine (:mod:`pxpool._tasks.payload`
says why), as ``ProcessPoolExecutor`` pickles them in its own thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, wait
from functools import partial
from typing import Any

from .._reliability.timeouts import DEFAULT_RETRIES
from .agent import run_chunk
from .future import TaskFuture

SHUTDOWN_POLL = 1.0  # seconds between checks while shutdown(wait=True) waits
PRUNE_FROM = 1024  # futures kept before done ones are first dropped

Submit = Callable[[Any, tuple[Any, ...], dict[str, Any], float | None, int], TaskFuture]
SubmitMany = Callable[[Any, list[tuple[Any, ...]], float | None, int], list[TaskFuture]]


def chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """The argument tuples of ``map`` in lists of ``size``."""
    calls = zip(*iterables, strict=False)
    while chunk := list(itertools.islice(calls, size)):
        yield chunk


class PoolExecutor(Executor):
    """An Executor whose workers are the pool's engines (see the module docstring).

    ``timeout`` and ``retries`` apply to each task, as in ``pool.submit``."""

    def __init__(
        self,
        submit: Submit,
        submit_many: SubmitMany,
        timeout: float | None = None,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self._submit = submit
        self._submit_many = submit_many
        self._timeout = timeout
        self._retries = retries
        self._lock = threading.Lock()  # a submit against shutdown
        self._shutdown = False
        # the futures shutdown waits for: done ones are dropped once the list has
        # doubled since, so nothing runs as each finishes (the lane's thread settles)
        self._pending: list[TaskFuture] = []
        self._prune_at = PRUNE_FROM

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        with self._lock:
            self._check_open()
            future = self._submit(fn, args, kwargs, self._timeout, self._retries)
            self._keep([future])
        return future

    def _submit_calls(
        self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]
    ) -> list[TaskFuture]:
        """``map``'s calls queued together: ``fn`` pickled once, each call's arguments
        as it is sent (:mod:`pxpool._tasks.payload`)."""
        with self._lock:
            self._check_open()
            futures = self._submit_many(fn, calls, self._timeout, self._retries)
            self._keep(futures)
        return futures

    def _check_open(self) -> None:  # under self._lock
        if self._shutdown:
            raise RuntimeError(
                "cannot schedule new futures after shutdown; make a new executor with "
                "pool.executor()"
            )

    def _keep(self, futures: list[TaskFuture]) -> None:  # under self._lock
        self._pending += futures
        if len(self._pending) >= self._prune_at:
            self._pending = [f for f in self._pending if not f.done()]
            self._prune_at = max(PRUNE_FROM, 2 * len(self._pending))

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``fn`` over the items, in order; ``chunksize`` calls travel as one task."""
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a whole number >= 1; got {chunksize!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            futures = self._submit_calls(fn, list(zip(*iterables, strict=False)))
            return _in_order(futures, deadline)
        # each chunk's calls travel inside its task's function, cloudpickled with fn
        futures = [
            self.submit(partial(run_chunk, fn, chunk)) for chunk in chunks(iterables, chunksize)
        ]
        return itertools.chain.from_iterable(_in_order(futures, deadline))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = [f for f in self._pending if not f.done()]
            self._pending = []
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            while pending:
                pending = list(_wait_some(pending))


def _in_order(futures: list[TaskFuture], deadline: float | None) -> Iterator[Any]:
    """The futures' results in order, as ``Executor.map`` yields them: within the
    deadline (else TimeoutError), the ones not reached cancelled when abandoned."""
    futures = futures[::-1]
    try:
        while futures:
            left = None if deadline is None else deadline - time.monotonic()
            future = futures.pop()
            try:
                yield future.result(left)
            finally:
                future.cancel()
    finally:
        for future in futures:
            future.cancel()


def _wait_some(futures: list[TaskFuture]) -> set[Any]:
    """The futures still not done after one bounded wait."""
    return set(wait(futures, timeout=SHUTDOWN_POLL).not_done)
