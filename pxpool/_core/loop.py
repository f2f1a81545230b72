"""One event loop thread per pool, and ipyparallel's ``_sync`` twin convention.

ipyparallel's launchers remember the event loop they were first used on and report
process exits through it, so every Cluster call of a pool runs on one long-lived loop
in a daemon thread. Public coroutine methods hop onto that loop; ``name_sync`` twins
block the caller until the coroutine finishes, which works in scripts and inside a
running Jupyter loop alike.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")

_LOOP_START_TIMEOUT = 10.0


class LoopThread:
    """An asyncio loop running in a daemon thread until :meth:`close`."""

    def __init__(self, name: str) -> None:
        self._ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        if not self._ready.wait(_LOOP_START_TIMEOUT):
            raise RuntimeError(
                f"event loop thread {name!r} did not start in {_LOOP_START_TIMEOUT}s"
            )

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        self.loop.close()

    def in_loop(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on this loop from any loop (or directly if already on it)."""
        if self.in_loop():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def close(self) -> None:
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.in_loop():
                self.thread.join(timeout=5)


class SyncTwins:
    """Give every coroutine method ``name`` a blocking twin ``name_sync``."""

    _loop_thread: LoopThread

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_sync"):
            method = getattr(self, name[: -len("_sync")], None)
            if inspect.iscoroutinefunction(method):
                return partial(self._run_sync, method)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _run_sync(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        if self._loop_thread.in_loop():
            raise RuntimeError(f"{method.__name__}_sync called from the pool's own loop; await it")
        return self._loop_thread.submit(method(*args, **kwargs)).result()

    def __dir__(self) -> list[str]:
        names = list(super().__dir__())
        return names + [
            f"{n}_sync" for n in names if inspect.iscoroutinefunction(getattr(type(self), n, None))
        ]
