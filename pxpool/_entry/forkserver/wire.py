"""The fork server's request protocol, both sides (standard library only).

One connection per engine, on a Unix stream socket in a directory only the user can
enter (0700, the socket itself 0600):

1. the client sends one request: a 4-byte length and a JSON object (``argv``, ``env``,
   ``cwd``, and ``ignored``: signals the engine starts ignoring, as exec keeps them), with the engine's stdin, stdout and stderr attached as file descriptors
   (``SCM_RIGHTS``), so the engine writes to the very file (or ssh channel) the caller
   opened for it;
2. the server answers one JSON line, ``{"pid": N}`` or ``{"error": "..."}``;
3. when the engine exits the server, its parent, reaps it at once and sends
   ``{"exit": code}`` (negative: the signal that ended it, as ``subprocess`` says), then
   closes the connection. End of file instead means the server is gone; the engine runs
   on and is watched by its pid.

Authentication is the file system's and the kernel's: only the user can reach the
socket (directory and file modes), and on Linux the server also reads the peer's uid
from ``SO_PEERCRED`` and refuses any other. A process that can connect as the user
could as well run the engine command itself, so the socket grants nothing more.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_REQUEST = 4 * 1024 * 1024  # an environment with a long PYTHONPATH fits many times over
STDIO_FDS = 3  # stdin, stdout, stderr
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ForkRefused(OSError):
    """The server could not be reached, or it answered with an error instead of a pid."""


def peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process on the other end (Linux); None where the kernel won't say."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, option, _CRED.size))
    return int(uid)


def peer_pid(conn: socket.socket) -> int | None:
    """The pid of the process on the other end (Linux): a client learns the server's."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    pid, _uid, _gid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, option, _CRED.size))
    return int(pid)


def send_request(conn: socket.socket, body: dict[str, Any], fds: list[int]) -> None:
    data = json.dumps(body).encode()
    socket.send_fds(conn, [HEADER.pack(len(data)) + data], fds)


def read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request and its descriptors; raises ``ValueError`` on a malformed one (the
    descriptors received so far are closed)."""
    head, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, STDIO_FDS)
    try:
        if len(head) != HEADER.size:
            raise ValueError("short request header")
        (size,) = HEADER.unpack(head)
        if size > MAX_REQUEST:
            raise ValueError(f"request of {size} bytes is larger than {MAX_REQUEST}")
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ValueError("request ended early")
            data += chunk
        body = json.loads(data)
        if not isinstance(body, dict) or len(fds) != STDIO_FDS:
            raise ValueError("a request is a JSON object with stdin, stdout and stderr attached")
        return body, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def send_reply(conn: socket.socket, body: dict[str, Any]) -> None:
    conn.sendall(json.dumps(body).encode() + b"\n")


class Forked:
    """An engine the server forked: its pid, and the connection that reports its exit."""

    def __init__(self, conn: socket.socket, pid: int, pending: bytes) -> None:
        self.conn = conn
        self.pid = pid
        self._pending = pending

    def wait(self, timeout: float | None = None) -> tuple[bool, int | None]:
        """Wait for the engine's exit report: ``(True, code)`` once reported,
        ``(True, None)`` when the server went away (watch the pid instead),
        ``(False, None)`` when ``timeout`` passed first."""
        self.conn.settimeout(timeout)
        while b"\n" not in self._pending:
            try:
                chunk = self.conn.recv(4096)
            except TimeoutError:
                return False, None
            except OSError:
                chunk = b""
            if not chunk:
                self.close()
                return True, None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        self.close()
        code = json.loads(line).get("exit")
        return True, code if isinstance(code, int) else None

    def close(self) -> None:
        self.conn.close()


def fork(path: str, body: dict[str, Any], fds: list[int], timeout: float = 10.0) -> Forked:
    """Ask the server at ``path`` for an engine; raises :class:`ForkRefused` when it
    cannot be reached or does not fork."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(path)
        send_request(conn, body, fds)
        pending = b""
        while b"\n" not in pending:
            chunk = conn.recv(4096)
            if not chunk:
                raise ForkRefused(f"the fork server at {path} closed the connection")
            pending += chunk
    except ForkRefused:
        conn.close()
        raise
    except OSError as exc:
        conn.close()
        raise ForkRefused(f"the fork server at {path} did not answer: {exc}") from exc
    line, rest = pending.split(b"\n", 1)
    reply = json.loads(line)
    if not isinstance(reply.get("pid"), int):
        conn.close()
        raise ForkRefused(f"the fork server at {path} refused: {reply.get('error', reply)}")
    return Forked(conn, reply["pid"], rest)
