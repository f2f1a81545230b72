"""Remote debugging of a pool's engines: ``pool.debug(k)`` and the engine hook behind it.

Every pool installs a small debugger agent on each engine when engines join (an engine
hook; see :mod:`pxpool._debug.agent`). Then:

- ``pool.debug(k)`` opens a :class:`~pxpool.DebugSession` on engine ``k``: at its
  ``breakpoint()`` if it is stopped at one, else post-mortem on its last failed task, in
  the frame where the error was raised;
- ``pool.debug()`` picks an engine stopped at a breakpoint, else the most recent failure;
  ``pool.debug(wait=30)`` waits up to 30 s for some engine to reach a ``breakpoint()``;
- ``pool.debug_timeout`` (seconds, default 60) is how long ``breakpoint()`` waits for a
  session before the task continues with a warning.

The channel is authenticated with the pool's key and listens on the engines' own
interface towards the controller; see :mod:`pxpool._debug.wire`.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ._debug import agent as _debug_engine
from ._debug.session import DebugSession, open_session, request
from ._debug.wire import SignedConn
from .engines import reach
from .errors import DebugConnectionError, DebugError, EngineNotFoundError, PxpoolError

if TYPE_CHECKING:
    from ._core.core import PoolCore

__all__ = [
    "DebugMethods",
    "Debugger",
    "DebugSession",
]

DEFAULT_DEBUG_TIMEOUT = 60.0
INSTALL_TIMEOUT = 30.0
STATUS_TIMEOUT = 5.0


class Debugger:
    """One per pool: the debugger agents' addresses, kept-open status connections and
    ``debug_timeout``; the engine hook installs the agent on engines that join."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self.lock = threading.Lock()
        self.addresses: dict[int, tuple[str, int]] = {}
        self.conns: dict[int, SignedConn] = {}
        self.timeout = DEFAULT_DEBUG_TIMEOUT

    @property
    def installed(self) -> bool:
        """True once an agent runs on some engine of the pool."""
        with self.lock:
            return bool(self.addresses)

    def engines_joined(self, core: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: start the debugger agent on ``engine_ids``, note their addresses."""
        client = core.live_client()
        controller_ip = core.controller_ip()
        pending = {
            i: client[i].apply_async(_debug_engine.install, controller_ip, self.timeout)
            for i in engine_ids
        }
        for engine_id, result in pending.items():
            address = result.get(timeout=INSTALL_TIMEOUT)
            with self.lock:
                self.addresses[engine_id] = (str(address[0]), int(address[1]))
                stale = self.conns.pop(engine_id, None)
            if stale is not None:
                stale.close()

    def set_timeout(self, seconds: float) -> None:
        """``pool.debug_timeout = seconds``: on every engine now and those joining later."""
        if not isinstance(seconds, int | float) or seconds <= 0:
            raise ValueError(f"debug_timeout must be a positive number of seconds; got {seconds!r}")
        self.timeout = float(seconds)
        for engine_id in self.core.registered_ids():
            try:
                self._request(engine_id, {"op": "config", "timeout": float(seconds)})
            except DebugError:
                pass  # an engine without a debugger gets the value when it is installed

    def debug(
        self, engine_id: int | None = None, *, wait: float = 0.0, timeout: float | None = None
    ) -> DebugSession:
        """``pool.debug``: at a ``breakpoint()`` or post-mortem (see the module doc)."""
        session_timeout = 600.0 if timeout is None else timeout
        if engine_id is not None:
            ids = self.core.registered_ids()
            if engine_id not in ids:
                raise EngineNotFoundError(engine_id, ids)
            return self._debug_engine(engine_id, wait, session_timeout)
        deadline = time.monotonic() + wait
        while True:
            statuses = self.status()
            session = self._attach_paused(statuses, session_timeout)
            if session is not None:
                return session
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if wait > 0:
            raise DebugError(
                f"No engine stopped at a breakpoint() within {wait:g}s; engines: {sorted(statuses)}. "
                "Call breakpoint() in the task's code, or raise `wait`."
            )
        failed = [(s["last_error"]["time"], i) for i, s in statuses.items() if s.get("last_error")]
        if not failed:
            raise DebugError(
                f"Nothing to debug: no engine of {sorted(statuses)} is stopped at a breakpoint "
                "or has a failed task. Run code that fails (then `pool.debug(k)`), call "
                "breakpoint() in a task, or step through a cell with `%%pxdebug -e k`."
            )
        return self._open(max(failed)[1], {"op": "postmortem"}, session_timeout)

    def _attach_paused(
        self, statuses: dict[int, dict[str, Any]], timeout: float
    ) -> DebugSession | None:
        """A session on the first engine stopped at a breakpoint that we can take."""
        for engine_id, status in sorted(statuses.items()):
            if status.get("paused"):
                try:
                    return self._open(engine_id, {"op": "attach"}, timeout)
                except DebugError:
                    continue  # taken by someone else or timed out meanwhile
        return None

    def status(self) -> dict[int, dict[str, Any]]:
        """Per engine: whether it is stopped at a breakpoint, and its last failure."""
        statuses = {}
        for engine_id in self.core.registered_ids():
            try:
                statuses[engine_id] = self._request(engine_id, {"op": "status"})
            except DebugConnectionError:
                continue  # stopped or restarting engines have no status
        return statuses

    def run_cell(self, engine_id: int, code: str) -> tuple[Any, DebugSession]:
        """Start ``code`` on ``engine_id`` under pdb, stopped at its first line."""
        ids = self.core.registered_ids()
        if engine_id not in ids:
            raise EngineNotFoundError(engine_id, ids)
        self._address(engine_id)
        result = self.core.live_client()[engine_id].apply_async(_debug_engine.run_cell, code)
        try:
            session = self._open(
                engine_id, {"op": "attach", "kinds": ["cell"], "wait": INSTALL_TIMEOUT}, 600.0
            )
        except DebugError:
            if result.ready():
                result.get()  # the task failed before it stopped: show why
            raise
        return result, session

    def attach_at_breakpoint(self, engine_id: int, timeout: float) -> DebugSession:
        """A session on ``engine_id`` stopped at a ``breakpoint()``."""
        return self._open(engine_id, {"op": "attach", "kinds": ["breakpoint"]}, timeout)

    # ------------------------------------------------------------ internals

    def _debug_engine(self, engine_id: int, wait: float, timeout: float) -> DebugSession:
        if wait > 0:
            return self._open(engine_id, {"op": "attach", "wait": wait}, timeout)
        status = self._request(engine_id, {"op": "status"})
        if status.get("paused"):
            try:
                return self._open(engine_id, {"op": "attach"}, timeout)
            except DebugError:
                pass  # it went on meanwhile: fall back to post-mortem
        if status.get("last_error"):
            return self._open(engine_id, {"op": "postmortem"}, timeout)
        raise DebugError(
            f"Engine {engine_id} has no failed task to inspect and is not stopped at a "
            "breakpoint(). Run code that fails on it first, call breakpoint() in a task, "
            f"or step through a cell with `%%pxdebug -e {engine_id}`."
        )

    def _open(self, engine_id: int, body: dict[str, Any], timeout: float) -> DebugSession:
        key = self.core.live_client().session.key
        return open_session(self._address(engine_id), key, body, timeout)

    def _address(self, engine_id: int) -> tuple[str, int]:
        with self.lock:
            address = self.addresses.get(engine_id)
        if address is None:  # a pool attached from elsewhere: install on demand
            try:
                self.engines_joined(self.core, [engine_id])
            except Exception as exc:
                raise DebugError(
                    f"Could not start the debugger on engine {engine_id}: {exc!r}. If the "
                    "engine is busy, wait for its task to finish; see `pxpool status`."
                ) from exc
            with self.lock:
                address = self.addresses[engine_id]
        try:
            return reach(self.core, engine_id, address)  # a local forward behind SSH tunnels
        except PxpoolError as exc:
            raise DebugConnectionError(f"No way to engine {engine_id}'s debugger: {exc}") from exc

    def _request(self, engine_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """One request on the engine's kept-open connection (reconnecting once)."""
        key = self.core.live_client().session.key
        for attempt in (1, 2):
            address = self._address(engine_id)
            with self.lock:
                conn = self.conns.pop(engine_id, None)
            try:
                if conn is None:
                    conn = SignedConn.connect(address[0], address[1], key, STATUS_TIMEOUT)
                reply = request(conn, body, STATUS_TIMEOUT)
            except (OSError, DebugConnectionError):
                if conn is not None:
                    conn.close()
                if attempt == 2:
                    raise
                continue
            with self.lock:
                old = self.conns.setdefault(engine_id, conn)
            if old is not conn:
                conn.close()
            return reply
        raise AssertionError("unreachable")


class DebugMethods:
    """The debugging half of :class:`pxpool.Pool`'s methods, over its :class:`Debugger`."""

    _debugger: Debugger

    @property
    def debug_timeout(self) -> float:
        """Seconds a ``breakpoint()`` on an engine waits for a session before going on."""
        return self._debugger.timeout

    @debug_timeout.setter
    def debug_timeout(self, seconds: float) -> None:
        self._debugger.set_timeout(seconds)

    def debug(
        self, engine_id: int | None = None, *, wait: float = 0.0, timeout: float | None = None
    ) -> DebugSession:
        """A debugger session at a ``breakpoint()`` or post-mortem (:mod:`pxpool.debug`)."""
        return self._debugger.debug(engine_id, wait=wait, timeout=timeout)

    def debug_status(self) -> dict[int, dict[str, Any]]:
        """Per engine: whether it is stopped at a breakpoint, and its last failure."""
        return self._debugger.status()

    def run_cell_under_debugger(self, engine_id: int, code: str) -> tuple[Any, DebugSession]:
        """``code`` on ``engine_id`` under pdb at its first line: (AsyncResult, session)."""
        return self._debugger.run_cell(engine_id, code)

    def attach_at_breakpoint(self, engine_id: int, timeout: float = 600.0) -> DebugSession:
        """A session on ``engine_id`` once it stops at a ``breakpoint()``."""
        return self._debugger.attach_at_breakpoint(engine_id, timeout)

    @property
    def debugger_installed(self) -> bool:
        """True once the debugger agent runs on this pool's engines."""
        return self._debugger.installed
