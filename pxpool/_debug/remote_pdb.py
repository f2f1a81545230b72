"""Engine side of remote debugging: the pdb whose input and output travel to the client.

:class:`RemotePdb` is pdb over a :class:`RemoteIO`: output collects until pdb asks for
a line, then goes to the client with the prompt in one signed message, and the reply
is the next command. A stop without a client waits for one through its
:class:`PauseHost` (the engine's :class:`~pxpool._debug.agent.Agent`), and continues
the task with a warning when nobody attaches in time. It runs on engines, imported by
the agent, and like it imports the standard library and pxpool's errors and wire only.
"""

from __future__ import annotations

import logging
import pdb
import sys
from types import FrameType, TracebackType
from typing import Protocol

from ..errors import DebugError, DebuggerQuit
from .wire import SignedConn

__all__ = ["PauseHost", "RemoteIO", "RemotePdb", "current_debugger", "describe", "innermost"]

log = logging.getLogger("pxpool.debug")
COMMAND_TIMEOUT = 3600.0  # seconds a paused engine waits for the user's next command
DETACH = "pxpool_detach"  # the command the engine runs when its client leaves


class PauseHost(Protocol):
    """What a :class:`RemotePdb` needs of the engine's agent."""

    engine_id: int
    timeout: float  # seconds a stop waits for a client

    def wait_for_client(self, kind: str, where: str) -> SignedConn | None:
        """Publish a stop and wait for a client; None if nobody came in time."""
        ...


def describe(frame: FrameType | None) -> str:
    """``function() at file:line`` of ``frame``."""
    if frame is None:
        return "?"
    code = frame.f_code
    return f"{code.co_name}() at {code.co_filename}:{frame.f_lineno}"


def innermost(tb: TracebackType) -> TracebackType:
    """The last entry of a traceback: where the error was raised."""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb


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

    Each stop without a client waits for one (``PauseHost.wait_for_client``). In
    breakpoint mode ``c`` ends the session (a later stop opens a new one) and ``q``
    raises :class:`DebuggerQuit` in the task; in cell mode the session lasts until the
    cell ends.
    """

    def __init__(self, agent: PauseHost, mode: str) -> None:
        self.agent = agent
        self.mode = mode
        self.io = RemoteIO(f"(Pdb-e{agent.engine_id}) ")
        self.user_quit = False
        # pdb annotates stdin as a TextIO; RemoteIO provides the readline it uses
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
                self._nobody_came(where)
                return
            self.io.attach(conn)
        super().interaction(frame, traceback)

    def _nobody_came(self, where: str) -> None:
        engine = self.agent.engine_id
        message = (
            f"pxpool: engine {engine}: stopped at {where} but no debugger "
            f"attached within {self.agent.timeout:g}s; continuing. Attach sooner with "
            f"`%pxdebug -e {engine}` or `pool.debug({engine})`, "
            "or raise `pool.debug_timeout`."
        )
        log.info(message)
        print(message, file=sys.stderr, flush=True)  # the task's stderr: the user sees it
        self._stop_tracing()

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


def current_debugger() -> RemotePdb | None:
    """The :class:`RemotePdb` tracing the calling thread, if one does."""
    trace = sys.gettrace()
    owner = getattr(trace, "__self__", None)
    return owner if isinstance(owner, RemotePdb) else None
