"""Client side of remote debugging: :class:`DebugSession` and the prompt loop.

A session is one stop of an engine's debugger (a post-mortem, a ``breakpoint()``, a
``%%pxdebug`` cell). ``send("p x")`` returns pdb's output up to its next prompt; when
the engine ends the session (``c`` from a breakpoint, ``q``, the cell finished) the
session is ``ended`` and ``end_reason`` says why. :func:`interact` drives a session
from ``input()``, which in a notebook is a prompt through Jupyter's stdin channel.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from ..errors import DebugConnectionError, DebugError
from .wire import SignedConn

__all__ = ["DebugSession", "interact", "request", "open_session"]

CONNECT_TIMEOUT = 10.0
SESSION_TIMEOUT = 600.0  # seconds one command may run before the session gives up


class DebugSession:
    """A pdb session on one engine: ``send(command) -> output``, ``prompt``, ``close()``.

    Use it as a context manager; leaving it detaches, and a task stopped at a
    breakpoint then continues.
    """

    def __init__(
        self, conn: SignedConn, info: dict[str, Any], timeout: float = SESSION_TIMEOUT
    ) -> None:
        self._conn = conn
        self.engine_id: int = int(info["engine"])
        self.kind: str = str(info["kind"])  # postmortem, breakpoint or cell
        self.where: str = str(info["where"])
        self.timeout = timeout
        self.prompt: str | None = None
        # (host, port) the session's connection reached: the engine's agent, or a
        # local forward to it when the engine is behind an SSH tunnel
        self.peer: tuple[str, int] = conn.sock.getpeername()[:2]
        self.ended = False
        self.end_reason: str | None = None
        self.intro = self._read_until_prompt(timeout)

    def __repr__(self) -> str:
        state = f"ended: {self.end_reason}" if self.ended else "open"
        return f"<DebugSession engine={self.engine_id} {self.kind} at {self.where} ({state})>"

    def _read_until_prompt(self, timeout: float) -> str:
        try:
            message = self._conn.recv(timeout)
        except DebugError:
            self._finish("the connection to the engine was lost")
            raise
        if "end" in message:
            self._finish(str(message["end"]))
        elif "prompt" in message:
            self.prompt = str(message["prompt"])
        else:
            self._finish("unexpected message")
            raise DebugConnectionError(
                f"Unexpected message from engine {self.engine_id}: {message!r}"
            )
        return str(message.get("out", ""))

    def _finish(self, reason: str) -> None:
        self.ended = True
        self.end_reason = reason
        self.prompt = None
        self._conn.close()

    def send(self, command: str, timeout: float | None = None) -> str:
        """Run one pdb command on the engine; its output up to the next prompt."""
        if self.ended:
            raise DebugError(
                f"The debugger session on engine {self.engine_id} has ended ({self.end_reason}); "
                f"open a new one with `pool.debug({self.engine_id})`."
            )
        try:
            self._conn.send({"cmd": command})
        except OSError as exc:
            self._finish("the connection to the engine was lost")
            raise DebugConnectionError(
                f"Lost the debugger on engine {self.engine_id}: {exc}"
            ) from exc
        return self._read_until_prompt(self.timeout if timeout is None else timeout)

    def close(self) -> None:
        """Leave the session: a stopped task continues, a post-mortem ends."""
        if self.ended:
            return
        try:
            self._conn.send({"detach": True})
            self._read_until_prompt(CONNECT_TIMEOUT)
        except (OSError, DebugError):
            pass
        if not self.ended:
            self._finish("closed")

    def __enter__(self) -> DebugSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(
    conn: SignedConn, body: dict[str, Any], timeout: float = CONNECT_TIMEOUT
) -> dict[str, Any]:
    conn.send(body)
    return conn.recv(timeout)


def open_session(
    address: tuple[str, int], key: bytes, body: dict[str, Any], timeout: float = SESSION_TIMEOUT
) -> DebugSession:
    """Connect, send an ``attach`` or ``postmortem`` request, and return the session."""
    conn = SignedConn.connect(address[0], address[1], key, CONNECT_TIMEOUT)
    try:
        reply = request(conn, body, CONNECT_TIMEOUT + float(body.get("wait", 0.0)))
        if "attached" not in reply:
            raise DebugError(str(reply.get("error", reply)))
        return DebugSession(conn, reply["attached"], timeout)
    except BaseException:
        conn.close()
        raise


def interact(
    session: DebugSession,
    read: Callable[[str], str] | None = None,
    write: Callable[[str], None] = print,
) -> str:
    """Prompt for commands until the session ends; returns why it ended.

    ``read`` defaults to ``input`` looked up on each call (a notebook kernel swaps it
    in per cell). A frontend without stdin, end of input or an interrupt detaches.
    """
    from IPython.core.error import StdinNotImplementedError

    if session.intro.strip():
        write(session.intro.rstrip("\n"))
    while not session.ended:
        try:
            line = (read or builtins.input)(session.prompt or "")
        except StdinNotImplementedError:
            write(
                f"pxpool: this frontend cannot answer prompts, so the debugger on engine "
                f"{session.engine_id} detaches and the task continues; from code use "
                f"`with pool.debug({session.engine_id}) as s: s.send('p x')`."
            )
            session.close()
            break
        except (EOFError, KeyboardInterrupt):
            session.close()
            break
        output = session.send(line)
        if output.strip():
            write(output.rstrip("\n"))
    reason = session.end_reason or "closed"
    write(f"pxpool: debugger session on engine {session.engine_id} ended: {reason}")
    return reason
