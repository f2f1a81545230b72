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
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

T = TypeVar("T")
Owner = TypeVar("Owner")
P = ParamSpec("P")
R = TypeVar("R")

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


class SyncTwin(Generic[Owner, P, R]):
    """``name_sync = SyncTwin(name)``: a blocking twin of coroutine method ``name``,
    typed like it (arguments and result), that runs it on the owner's pool loop
    (``owner.core.loop``) and waits. Called from that loop itself it raises, since
    it would wait for itself."""

    def __init__(self, method: Callable[Concatenate[Owner, P], Coroutine[Any, Any, R]]) -> None:
        self.method = method
        self.__doc__ = f"Blocking twin of :meth:`{method.__name__}`."

    @overload
    def __get__(self, obj: None, owner: type[Owner]) -> SyncTwin[Owner, P, R]: ...
    @overload
    def __get__(self, obj: Owner, owner: type[Owner]) -> Callable[P, R]: ...
    def __get__(
        self, obj: Owner | None, owner: type[Owner]
    ) -> SyncTwin[Owner, P, R] | Callable[P, R]:
        if obj is None:
            return self
        method = self.method
        loop: LoopThread = cast(Any, obj).core.loop

        def blocking(*args: P.args, **kwargs: P.kwargs) -> R:
            if loop.in_loop():
                raise RuntimeError(
                    f"{method.__name__}_sync called from the pool's own loop; await it"
                )
            return loop.submit(method(obj, *args, **kwargs)).result()

        blocking.__doc__ = self.__doc__
        blocking.__name__ = f"{method.__name__}_sync"
        return blocking
