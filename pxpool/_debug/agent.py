"""Engine side of remote debugging: the agent that lets a client reach a pdb on the engine.

:func:`install` runs on each engine (from a pool engine hook). It starts an
:class:`Agent`: a TCP listener bound on the engine's address towards the controller,
speaking the signed protocol of :mod:`pxpool._debug.wire`, and it sets
``sys.breakpointhook`` so ``breakpoint()`` in a task pauses that task until a client
attaches (or the pool's debug timeout passes; then the task continues with a warning).
The pdb itself, whose input and output travel to the client, is
:mod:`pxpool._debug.remote_pdb`.

Each stop of the debugger is one *session*: ``breakpoint()`` and ``%%pxdebug`` wait for a
client to attach; post-mortem sessions run on the agent's own connection thread, on the
traceback the engine kept in ``sys.last_traceback`` when the task failed (IPython's
``showtraceback`` sets it, for ``apply`` and ``execute`` alike), so the engine's main
thread stays free while someone inspects an old failure.
"""

from __future__ import annotations

import itertools
import linecache
import logging
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .._entry.net import local_address
from ..errors import DebugError
from .remote_pdb import RemotePdb, current_debugger, describe, innermost
from .wire import SignedConn

log = logging.getLogger("pxpool.debug")
REQUEST_TIMEOUT = 24 * 3600.0  # an idle client connection is dropped after this
MAX_ATTACH_WAIT = 600.0
_AGENT: Agent | None = None
_cells = itertools.count(1)


@dataclass
class Pause:
    """A thread on the engine that stopped and waits for a client to attach."""

    kind: str  # "breakpoint" or "cell"
    where: str
    engine: int
    since: float = field(default_factory=time.time)
    taken: bool = False
    handoff: queue.Queue[SignedConn] = field(default_factory=queue.Queue)

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "where": self.where, "engine": self.engine, "since": self.since}


class Agent:
    """The engine's debugger endpoint: accepts signed connections, hands them to pauses."""

    def __init__(self, engine_id: int, key: bytes, host: str, timeout: float) -> None:
        self.engine_id = engine_id
        self.key = key
        self.timeout = timeout
        self.error_time = 0.0  # when the last failed task's traceback was shown
        self._server = socket.create_server((host, 0))
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self._cond = threading.Condition()
        self._pause: Pause | None = None
        self._pause_lock = threading.Lock()  # one waiting pause per engine at a time
        threading.Thread(target=self._accept_loop, name="pxpool-debug", daemon=True).start()

    # ------------------------------------------------------------ connections

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            conn = SignedConn.accept(sock, self.key)
        except OSError:
            sock.close()
            return
        while True:
            try:
                request = conn.recv(REQUEST_TIMEOUT)
            except DebugError as exc:
                if "closed by the other side" not in str(exc):
                    log.warning(
                        "pxpool: engine %s refused a debugger connection: %s", self.engine_id, exc
                    )
                conn.refuse(str(exc))
                return
            try:
                if not self._answer(conn, request):
                    return  # another thread owns the connection now, or it ended
            except (OSError, DebugError):
                conn.close()
                return

    def _answer(self, conn: SignedConn, request: dict[str, Any]) -> bool:
        op = request.get("op")
        if op == "status":
            conn.send(self.status())
        elif op == "config":
            self.timeout = float(request["timeout"])
            conn.send({"ok": True})
        elif op == "attach":
            wait = min(float(request.get("wait", 0.0)), MAX_ATTACH_WAIT)
            pause = self._take_pause(request.get("kinds"), wait)
            if pause is None:
                conn.send({"error": f"engine {self.engine_id} is not paused in a debugger"})
                return True
            conn.send({"attached": pause.info()})
            pause.handoff.put(conn)
            return False
        elif op == "postmortem":
            self._post_mortem(conn)
            return False
        else:
            conn.send({"error": f"unknown request {op!r}"})
        return True

    def status(self) -> dict[str, Any]:
        with self._cond:
            pause = self._pause
            paused = pause.info() if pause is not None and not pause.taken else None
        error = None
        tb = getattr(sys, "last_traceback", None)
        if tb is not None:
            value = getattr(sys, "last_value", None)
            error = {
                "type": type(value).__name__,
                "message": str(value),
                "where": describe(innermost(tb).tb_frame),
                "time": self.error_time,
            }
        return {"engine": self.engine_id, "paused": paused, "last_error": error}

    # ------------------------------------------------------------ pauses

    def _take_pause(self, kinds: list[str] | None, wait: float) -> Pause | None:
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                pause = self._pause
                if pause is not None and not pause.taken and (not kinds or pause.kind in kinds):
                    pause.taken = True
                    return pause
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def wait_for_client(self, kind: str, where: str) -> SignedConn | None:
        """Publish a pause and wait up to ``self.timeout`` for a client; None if nobody came."""
        timeout = self.timeout
        if not self._pause_lock.acquire(timeout=timeout):
            return None
        try:
            pause = Pause(kind, where, self.engine_id)
            with self._cond:
                self._pause = pause
                self._cond.notify_all()
            try:
                return pause.handoff.get(timeout=timeout)
            except queue.Empty:
                with self._cond:
                    if not pause.taken:
                        return None
                try:  # taken at the last moment: the reply is on its way
                    return pause.handoff.get(timeout=10.0)
                except queue.Empty:
                    return None
            finally:
                with self._cond:
                    if self._pause is pause:
                        self._pause = None
        finally:
            self._pause_lock.release()

    def _post_mortem(self, conn: SignedConn) -> None:
        tb = getattr(sys, "last_traceback", None)
        if tb is None:
            conn.send({"error": f"engine {self.engine_id} has no failed task to inspect"})
            conn.close()
            return
        where = describe(innermost(tb).tb_frame)
        conn.send({"attached": {"kind": "postmortem", "where": where, "engine": self.engine_id}})
        debugger = RemotePdb(self, "postmortem")
        debugger.io.attach(conn)
        try:
            debugger.reset()
            debugger.interaction(None, tb)
        finally:
            debugger.io.detach("post-mortem session ended")


def breakpointhook(*args: Any, **kwargs: Any) -> None:
    """``sys.breakpointhook`` on engines: stop the caller and wait for a client."""
    agent = _AGENT
    # the caller's frame, where pdb stops; sys._getframe is how a breakpoint hook finds it
    frame = sys._getframe(1)  # noqa: SLF001
    if agent is None:
        return
    debugger = current_debugger() or RemotePdb(agent, "breakpoint")
    debugger.set_trace(frame)


def install(controller_ip: str, timeout: float) -> tuple[str, int]:
    """Start this engine's agent (once) and set the breakpoint hook; its address."""
    global _AGENT
    from IPython.core.getipython import get_ipython

    shell = get_ipython()
    kernel = shell.kernel
    if _AGENT is None:
        key = kernel.session.key
        if not key:
            raise DebugError("this pool's engines have no message key; remote debugging needs one")
        _AGENT = Agent(int(kernel.engine_id), key, local_address(controller_ip), timeout)
        _watch_failures(shell, _AGENT)
    _AGENT.timeout = timeout
    sys.breakpointhook = breakpointhook
    return _AGENT.address


def _watch_failures(shell: Any, agent: Agent) -> None:
    """Stamp the time of each failure, so the most recent one can be picked."""
    shown = shell.showtraceback

    def showtraceback(*args: Any, **kwargs: Any) -> Any:
        agent.error_time = time.time()
        return shown(*args, **kwargs)

    shell.showtraceback = showtraceback


def run_cell(code: str) -> None:
    """``%%pxdebug``: run ``code`` in the engine's namespace, stopped at its first line."""
    agent = _AGENT
    if agent is None:
        raise DebugError("no debugger on this engine; pool.debug() installs it")
    from IPython.core.getipython import get_ipython

    filename = f"<pxdebug-e{agent.engine_id}-{next(_cells)}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    namespace = get_ipython().user_ns
    debugger = RemotePdb(agent, "cell")
    try:
        debugger.run(compile(code, filename, "exec"), namespace, namespace)
    except BaseException as exc:
        debugger.io.detach(f"the cell raised {type(exc).__name__}: {exc}")
        raise
    debugger.io.detach(
        "quit; the rest of the cell did not run" if debugger.user_quit else "the cell finished"
    )


def configure(timeout: float) -> None:
    """Set how long a stop waits for a client (as a ``config`` request does)."""
    if _AGENT is not None:
        _AGENT.timeout = timeout


def listening_address() -> tuple[str, int] | None:
    """The address this engine's agent listens at (the one :func:`install` returned);
    None before it is installed."""
    agent = _AGENT
    return None if agent is None else agent.address


def pause_timeout() -> float | None:
    """Seconds a stop on this engine waits for a client before the task continues
    (``pool.debug_timeout``); None before the agent is installed."""
    agent = _AGENT
    return None if agent is None else agent.timeout


__all__ = [
    "breakpointhook",
    "configure",
    "install",
    "listening_address",
    "pause_timeout",
    "run_cell",
]
