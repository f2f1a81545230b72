"""Engines that join a running pool serve no task before its engine hooks ran.

An engine that joins a running pool (a replacement under a dead engine's id,
``pool.scale``, ``pool.restart``, an idle pool waking up, a walltime replacement)
registers with the hub before the pool's engine hooks ran on it, and the hooks
replay what the user set up (names pushed to all engines, ``pool.setup`` code).
Such engines start *held*: ipyparallel runs ``--IPEngine.startup_command`` in
``init_code()``, before the kernel dispatches its first shell message, and that
command wraps the engine's ``apply_request`` and ``execute_request`` handlers.
Until the pool releases the engine, after its hooks, every request that the hooks
did not send (their messages carry :data:`MARK` in their metadata) waits on the
engine and runs after the release, in the order it came: load-balanced tasks and
tasks sent to that engine id alike.

Load-balanced tasks wait rather than go back to the scheduler (as a draining
engine's do, :mod:`pxpool._reliability.walltime`): ipyparallel's scheduler never again sends a
task to an engine that handed it back, so a task handed back by every engine (a
one-engine pool, or all engines joining at once after an idle wake) would wait
for good. The scheduler sends an engine one task at a time (``hwm = 1``), so at
most one load-balanced task per joining engine waits for its hooks.

Agents with a channel of their own (the task lane, :mod:`pxpool._tasks.agent`) pass
no wrapped handler: they ask :func:`is_held` and wait with :func:`when_released`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

log = logging.getLogger("pxpool.hold")
MARK = "pxpool_engine_hook"  # metadata key of messages that engine hooks send
HOLD_LIMIT = 300.0  # seconds a held engine waits for its release before it serves anyway
RELEASE_TIMEOUT = 10.0
# run by ipyparallel before the engine handles any message (no quotes: job scripts
# quote it for the shell); the user namespace keeps no name of it
STARTUP_ARG = "--IPEngine.startup_command=import pxpool._core.hold as _h; _h.hold(); del _h"
HANDLERS = ("apply_request", "execute_request")

# ---------------------------------------------------------------- engine side

_HOLD: _Hold | None = None


class _Hold:
    """Defers the shell requests of a held engine and runs them on release."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.held = True
        self.waiting: list[tuple[Callable[..., Any], Any, Any, dict[str, Any]]] = []
        self.muted: set[str] = set()  # deferred requests whose "idle" status is not sent
        self.on_release: list[Callable[[], None]] = []  # engine-side agents' deferred work
        for kind in HANDLERS:
            kernel.shell_handlers[kind] = partial(self.dispatch, kernel.shell_handlers[kind])
        # ipykernel's Kernel has no public hook around the status it publishes
        self._status = kernel._publish_status_and_flush  # noqa: SLF001 - ipykernel Kernel
        kernel._publish_status_and_flush = self.publish_status  # noqa: SLF001 - as above
        asyncio.get_event_loop().call_later(HOLD_LIMIT, self.release, True)

    def dispatch(self, handler: Callable[..., Any], stream: Any, ident: Any, parent: Any) -> Any:
        if (self.held or self.waiting) and not (parent.get("metadata") or {}).get(MARK):
            self.waiting.append((handler, stream, ident, parent))
            self.muted.add(parent["header"]["msg_id"])
            return None
        return handler(stream, ident, parent)

    def publish_status(self, status: str, channel: str, stream: Any, parent: Any = None) -> None:
        """Leave out the "idle" of a deferred request: the client takes it as the end
        of the request's output; the real one follows when the request ran."""
        if status == "idle" and self.muted:
            header = (parent or self.kernel.get_parent(channel) or {}).get("header") or {}
            if header.get("msg_id") in self.muted:
                self.muted.discard(header["msg_id"])
                return
        self._status(status, channel, stream, parent)

    def release(self, timed_out: bool = False) -> bool:
        if not self.held:
            return False
        if timed_out:
            log.warning("pxpool: engine not released by its pool after %gs; serving", HOLD_LIMIT)
        self.held = False
        if self.waiting:
            asyncio.ensure_future(self.flush())
        callbacks, self.on_release = self.on_release, []
        for callback in callbacks:
            asyncio.get_event_loop().call_soon(callback)
        return True

    async def flush(self) -> None:
        """Run the deferred requests in order, one at a time, as the kernel would."""
        kernel = self.kernel
        while self.waiting:
            # the lock ipykernel's Kernel runs shell requests under (no public name)
            async with kernel._main_asyncio_lock:  # noqa: SLF001 - ipykernel Kernel
                handler, stream, ident, parent = self.waiting.pop(0)
                kernel.set_parent(ident, parent, channel="shell")
                self._status("busy", "shell", None)
                kernel.pre_handler_hook()
                try:
                    result = handler(stream, ident, parent)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("pxpool: a deferred %s failed", parent["header"]["msg_type"])
                finally:
                    kernel.post_handler_hook()
                    for out in (sys.stdout, sys.stderr):
                        if out is not None:
                            out.flush()
                    self._status("idle", "shell", stream)


def hold() -> None:
    """``--IPEngine.startup_command``: hold this engine until the pool releases it."""
    global _HOLD
    from ipyparallel.engine.app import IPEngine

    if _HOLD is None:
        _HOLD = _Hold(IPEngine.instance().kernel)


def is_held() -> bool:
    """On an engine: True until the pool released it. Agents with a channel of their
    own (the task lane) ask, since their messages do not pass the wrapped handlers."""
    return _HOLD is not None and _HOLD.held


def when_released(callback: Callable[[], None]) -> None:
    """On an engine's main thread: call ``callback()`` on the kernel's loop once the
    engine is released (soon, if it is not held)."""
    if is_held():
        assert _HOLD is not None
        _HOLD.on_release.append(callback)
    else:
        asyncio.get_event_loop().call_soon(callback)


def _release() -> bool:
    """On an engine: serve deferred and new requests; False if it was not held."""
    return _HOLD.release() if _HOLD is not None else False


# ---------------------------------------------------------------- client side

_IN_HOOKS: contextvars.ContextVar[bool] = contextvars.ContextVar("pxpool_in_hooks", default=False)


@contextmanager
def hooks_running() -> Iterator[None]:
    """While engine hooks run (threads started by ``asyncio.to_thread`` inherit it):
    their messages pass held engines."""
    token = _IN_HOOKS.set(True)
    try:
        yield
    finally:
        _IN_HOOKS.reset(token)


def mark(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The metadata of a message the client sends: marked when an engine hook sends it."""
    if not _IN_HOOKS.get():
        return metadata
    return {**(metadata or {}), MARK: True}


class HoldsEngines(Protocol):
    """A provider, as :func:`release` sees it."""

    hold_engines: bool


class HoldingPool(Protocol):
    """What :func:`release` needs of a pool; :class:`pxpool._core.core.PoolCore` is one
    (named by its shape, as ``core`` imports this module)."""

    @property
    def name(self) -> str: ...

    @property
    def provider(self) -> HoldsEngines: ...

    def live_client(self) -> Any: ...


def release(pool: HoldingPool, engine_ids: list[int]) -> None:
    """After the engine hooks (inside :func:`hooks_running`): release ``engine_ids``;
    engines that join from now on start held."""
    pool.provider.hold_engines = True
    pending = {}
    for engine_id in engine_ids:
        try:
            pending[engine_id] = pool.live_client()[engine_id].apply_async(_release)
        except Exception as exc:  # gone meanwhile: its replacement is held and released
            log.warning("pxpool: engine %s of pool %r not released: %r", engine_id, pool.name, exc)
    for engine_id, result in pending.items():
        try:
            result.get(timeout=RELEASE_TIMEOUT)
        except Exception as exc:  # it serves anyway after HOLD_LIMIT
            log.warning("pxpool: engine %s of pool %r not released: %r", engine_id, pool.name, exc)
