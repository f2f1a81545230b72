"""Engine side of remote debugging: a pdb whose input and output travel to the client.

:func:`install` runs on each engine (from a pool engine hook). It starts an
:class:`Agent`: a TCP listener bound on the engine's address towards the controller,
speaking the signed protocol of :mod:`pxpool._debug.wire`, and it sets
``sys.breakpointhook`` so ``breakpoint()`` in a task pauses that task until a client
attaches (or the pool's debug timeout passes; then the task continues with a warning).

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
import pdb
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from .._entry.net import local_address
from ..errors import PxpoolError
from .wire import DebugConnectionError, DebugError, SignedConn

log = logging.getLogger("pxpool.debug")
COMMAND_TIMEOUT = 3600.0  # seconds a paused engine waits for the user's next command
REQUEST_TIMEOUT = 24 * 3600.0  # an idle client connection is dropped after this
MAX_ATTACH_WAIT = 600.0
DETACH = "pxpool_detach"  # the command the engine runs when its client leaves
_AGENT: Agent | None = None
_cells = itertools.count(1)


class DebuggerQuit(PxpoolError, RuntimeError):
    """Raised in a task on the engine when the user quits (``q``) a breakpoint session.

    The task ends with this error; the engine itself keeps running and takes new tasks.
    """


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


def describe(frame: FrameType | None) -> str:
    if frame is None:
        return "?"
    code = frame.f_code
    return f"{code.co_name}() at {code.co_filename}:{frame.f_lineno}"


def innermost(tb: TracebackType) -> TracebackType:
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb


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


class RemoteIO:
    """pdb's stdin and stdout: output collects until pdb asks for a line, then goes out
    with the prompt in one message; the reply is the next command."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.conn: SignedConn | None = None
        self._buffer: list[str] = []

    def attach(self, conn: SignedConn) -> None:
        self.conn = conn

    def write(self, text: str) -> int:
        self._buffer.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def _take_output(self) -> str:
        out, self._buffer = "".join(self._buffer), []
        return out[: -len(self.prompt)] if out.endswith(self.prompt) else out

    def readline(self) -> str:
        if self.conn is None:
            return DETACH + "\n"
        try:
            self.conn.send({"out": self._take_output(), "prompt": self.prompt})
            message = self.conn.recv(COMMAND_TIMEOUT)
        except (OSError, DebugError) as exc:
            log.warning("pxpool: debugger client left (%s); the engine continues", exc)
            self.conn.close()
            self.conn = None
            return DETACH + "\n"
        if message.get("detach"):
            return DETACH + "\n"
        return str(message.get("cmd", "")).replace("\n", " ") + "\n"

    def detach(self, reason: str) -> None:
        """End this session: send what is left of the output and why it ended."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.send({"end": reason, "out": self._take_output()})
        except (OSError, DebugError):
            pass
        conn.close()


class RemotePdb(pdb.Pdb):
    """pdb over a :class:`RemoteIO`; ``mode`` is breakpoint, cell or postmortem.

    Each stop without a client waits for one (``Agent.wait_for_client``). In breakpoint
    mode ``c`` ends the session (a later stop opens a new one) and ``q`` raises
    :class:`DebuggerQuit` in the task; in cell mode the session lasts until the cell ends.
    """

    def __init__(self, agent: Agent, mode: str) -> None:
        self.agent = agent
        self.mode = mode
        self.io = RemoteIO(f"(Pdb-e{agent.engine_id}) ")
        self.user_quit = False
        super().__init__(stdin=self.io, stdout=self.io, nosigint=True, readrc=False)  # type: ignore[arg-type]
        self.prompt = self.io.prompt
        self.use_rawinput = False

    def interaction(self, frame: FrameType | None, traceback: TracebackType | None) -> None:
        if self.io.conn is None:
            where = describe(
                frame if frame is not None else traceback and innermost(traceback).tb_frame
            )
            conn = self.agent.wait_for_client(self.mode, where)
            if conn is None:
                message = (
                    f"pxpool: engine {self.agent.engine_id}: stopped at {where} but no debugger "
                    f"attached within {self.agent.timeout:g}s; continuing. Attach sooner with "
                    f"`%pxdebug -e {self.agent.engine_id}` or `pool.debug({self.agent.engine_id})`, "
                    "or raise `pool.debug_timeout`."
                )
                log.info(message)
                print(message, file=sys.stderr, flush=True)  # the task's stderr: the user sees it
                self._stop_tracing()
                return
            self.io.attach(conn)
        super().interaction(frame, traceback)

    def _stop_tracing(self) -> None:
        self.clear_all_breaks()
        self.set_continue()

    def do_continue(self, arg: str) -> bool | None:
        result = super().do_continue(arg)
        if self.mode == "breakpoint":
            self.io.detach("continued; the task runs on")
        return result

    do_c = do_cont = do_continue

    def do_quit(self, arg: str) -> bool | None:
        self.user_quit = True
        if self.mode != "breakpoint":
            return super().do_quit(arg)
        self._stop_tracing()
        self.io.detach("quit; the task ends with DebuggerQuit")
        raise DebuggerQuit(
            f"pxpool: the debugger session on engine {self.agent.engine_id} was quit at "
            f"{describe(self.curframe)}; the task stopped there. The engine keeps running "
            "and takes new tasks."
        )

    do_q = do_exit = do_quit

    def do_pxpool_detach(self, arg: str) -> bool:
        """The client left: continue the task (or end the post-mortem)."""
        if self.mode == "postmortem":
            return True
        self._stop_tracing()
        self.io.detach("detached; the task runs on")
        return True


def _current_debugger() -> RemotePdb | None:
    trace = sys.gettrace()
    owner = getattr(trace, "__self__", None)
    return owner if isinstance(owner, RemotePdb) else None


def breakpointhook(*args: Any, **kwargs: Any) -> None:
    """``sys.breakpointhook`` on engines: stop the caller and wait for a client."""
    agent = _AGENT
    frame = sys._getframe(1)
    if agent is None:
        return
    debugger = _current_debugger() or RemotePdb(agent, "breakpoint")
    debugger.set_trace(frame)


def install(controller_ip: str, timeout: float) -> tuple[str, int]:
    """Start this engine's agent (once) and set the breakpoint hook; its address."""
    global _AGENT
    from IPython import get_ipython

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
    from IPython import get_ipython

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
    if _AGENT is not None:
        _AGENT.timeout = timeout


__all__ = ["DebuggerQuit", "install", "run_cell", "breakpointhook", "DebugConnectionError"]
