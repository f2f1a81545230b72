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
from typing import TYPE_CHECKING, Any, cast

from ._debug import agent as _debug_engine
from ._debug.agent import DebuggerQuit
from ._debug.session import DebugSession, open_session, request
from ._debug.wire import DebugAuthError, DebugConnectionError, DebugError, SignedConn
from .engines._ssh_reach import reach
from .errors import EngineNotFoundError, PxpoolError

if TYPE_CHECKING:
    from .pool import Pool

__all__ = [
    "DebugAccess",
    "DebugSession",
    "DebugError",
    "DebugAuthError",
    "DebugConnectionError",
    "DebuggerQuit",
    "install_debugger",
]

DEFAULT_DEBUG_TIMEOUT = 60.0
INSTALL_TIMEOUT = 30.0
STATUS_TIMEOUT = 5.0


def install_debugger(pool: Pool, engine_ids: list[int]) -> None:
    """Engine hook: start the debugger agent on ``engine_ids`` and note their addresses."""
    client = pool.client
    controller_ip = client._config["interface"].split("://", 1)[-1]
    pending = {
        i: client[i].apply_async(_debug_engine.install, controller_ip, pool.debug_timeout)
        for i in engine_ids
    }
    state = _state(pool)
    for engine_id, result in pending.items():
        address = result.get(timeout=INSTALL_TIMEOUT)
        with state.lock:
            state.addresses[engine_id] = (str(address[0]), int(address[1]))
            stale = state.conns.pop(engine_id, None)
        if stale is not None:
            stale.close()


class _DebugState:
    """Per pool: engine debugger addresses and open status connections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.addresses: dict[int, tuple[str, int]] = {}
        self.conns: dict[int, SignedConn] = {}
        self.timeout = DEFAULT_DEBUG_TIMEOUT


def _state(pool: Any) -> _DebugState:
    state = pool.__dict__.get("_debug_state")
    if state is None:
        state = pool.__dict__.setdefault("_debug_state", _DebugState())
    return cast(_DebugState, state)


class DebugAccess:
    """Mixed into :class:`~pxpool.pool.Pool`: remote debugging of its engines."""

    @property
    def debug_timeout(self) -> float:
        """Seconds a ``breakpoint()`` on an engine waits for a session before going on."""
        return _state(self).timeout

    @debug_timeout.setter
    def debug_timeout(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or seconds <= 0:
            raise ValueError(f"debug_timeout must be a positive number of seconds; got {seconds!r}")
        _state(self).timeout = float(seconds)
        for engine_id in self._pool().ids:
            try:
                self._debug_request(engine_id, {"op": "config", "timeout": float(seconds)})
            except DebugError:
                pass  # an engine without a debugger gets the value when it is installed

    def debug(
        self, engine_id: int | None = None, *, wait: float = 0.0, timeout: float | None = None
    ) -> DebugSession:
        """Open a debugger session: at a ``breakpoint()`` or post-mortem (see module doc).

        ``wait`` seconds to wait for an engine to stop at a breakpoint; ``timeout`` bounds
        each command of the session (default 600 s).
        """
        pool = self._pool()
        session_timeout = 600.0 if timeout is None else timeout
        if engine_id is not None:
            if engine_id not in pool.ids:
                raise EngineNotFoundError(engine_id, pool.ids)
            return self._debug_engine(engine_id, wait, session_timeout)
        deadline = time.monotonic() + wait
        while True:
            statuses = self.debug_status()
            for engine_id, status in sorted(statuses.items()):
                if status.get("paused"):
                    try:
                        return self._open(engine_id, {"op": "attach"}, session_timeout)
                    except DebugError:
                        continue  # taken by someone else or timed out meanwhile
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

    def debug_status(self) -> dict[int, dict[str, Any]]:
        """Per engine: whether it is stopped at a breakpoint, and its last failure."""
        statuses = {}
        for engine_id in self._pool().ids:
            try:
                statuses[engine_id] = self._debug_request(engine_id, {"op": "status"})
            except DebugConnectionError:
                continue  # stopped or restarting engines have no status
        return statuses

    def run_cell_under_debugger(self, engine_id: int, code: str) -> tuple[Any, DebugSession]:
        """Start ``code`` on ``engine_id`` under pdb, stopped at its first line.

        Returns the task's AsyncResult and the session; ``%%pxdebug`` is built on it.
        """
        pool = self._pool()
        if engine_id not in pool.ids:
            raise EngineNotFoundError(engine_id, pool.ids)
        self._debug_address(engine_id)
        result = pool.client[engine_id].apply_async(_debug_engine.run_cell, code)
        try:
            session = self._open(
                engine_id, {"op": "attach", "kinds": ["cell"], "wait": INSTALL_TIMEOUT}, 600.0
            )
        except DebugError:
            if result.ready():
                result.get()  # the task failed before it stopped: show why
            raise
        return result, session

    # ------------------------------------------------------------ internals

    def _pool(self) -> Pool:
        return cast("Pool", self)

    def _debug_engine(self, engine_id: int, wait: float, timeout: float) -> DebugSession:
        if wait > 0:
            return self._open(engine_id, {"op": "attach", "wait": wait}, timeout)
        status = self._debug_request(engine_id, {"op": "status"})
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
        pool = self._pool()
        return open_session(self._debug_address(engine_id), pool.client.session.key, body, timeout)

    def _debug_address(self, engine_id: int) -> tuple[str, int]:
        state = _state(self)
        with state.lock:
            address = state.addresses.get(engine_id)
        if address is None:  # a pool attached from elsewhere: install on demand
            try:
                install_debugger(self._pool(), [engine_id])
            except Exception as exc:
                raise DebugError(
                    f"Could not start the debugger on engine {engine_id}: {exc!r}. If the "
                    "engine is busy, wait for its task to finish; see `pxpool status`."
                ) from exc
            with state.lock:
                address = state.addresses[engine_id]
        try:
            return reach(self._pool(), engine_id, address)  # a local forward behind SSH tunnels
        except PxpoolError as exc:
            raise DebugConnectionError(f"No way to engine {engine_id}'s debugger: {exc}") from exc

    def _debug_request(self, engine_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """One request on the engine's kept-open connection (reconnecting once)."""
        state = _state(self)
        key = self._pool().client.session.key
        for attempt in (1, 2):
            address = self._debug_address(engine_id)
            with state.lock:
                conn = state.conns.pop(engine_id, None)
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
            with state.lock:
                old = state.conns.setdefault(engine_id, conn)
            if old is not conn:
                conn.close()
            return reply
        raise AssertionError("unreachable")
