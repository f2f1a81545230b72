"""The debugger's wire: JSON lines over TCP, every message signed with the pool's key.

Both ends (the engine agent and :class:`~pxpool.DebugSession`) use :class:`SignedConn`.
The engine opens each connection with an unsigned hello carrying a fresh random nonce;
from then on every message body holds that nonce, its direction and a sequence number,
and is signed with HMAC-SHA256 under the pool's key (the key ipyparallel signs its own
messages with; :mod:`pxpool._entry.signing`, shared with the task lane). A message
from someone without the key, a replayed one or one out of order is refused and the
connection closed, so only the pool's clients reach a debugger.
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
from typing import Any

from .._entry.signing import sign
from ..errors import DebugAuthError, DebugConnectionError

__all__ = ["SignedConn", "sign"]  # sign: from pxpool._entry.signing, as before

PROTOCOL = "pxpool-debug/1"
MAX_LINE = 4 * 1024 * 1024  # bytes; a longer line is refused rather than buffered


class SignedConn:
    """One authenticated debugger connection; ``side`` is ``"engine"`` or ``"client"``."""

    def __init__(self, sock: socket.socket, key: bytes, side: str, nonce: str) -> None:
        self.sock = sock
        self.key = key
        self.side = side
        self.nonce = nonce
        self._sent = 0
        self._received = 0
        self._buffer = b""

    # ------------------------------------------------------------ opening

    @classmethod
    def accept(cls, sock: socket.socket, key: bytes) -> SignedConn:
        """Engine side: greet a new connection with a fresh nonce."""
        nonce = secrets.token_hex(16)
        conn = cls(sock, key, "engine", nonce)
        conn._write({"hello": PROTOCOL, "nonce": nonce})
        return conn

    @classmethod
    def connect(cls, host: str, port: int, key: bytes, timeout: float) -> SignedConn:
        """Client side: connect and read the engine's hello."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise DebugConnectionError(
                f"Cannot reach the debugger of an engine at {host}:{port}: {exc}. "
                "The engine may have stopped; check `pool.ids` and `pxpool status`."
            ) from exc
        conn = cls(sock, key, "client", "")
        hello = conn._read(timeout)
        if hello.get("hello") != PROTOCOL or not isinstance(hello.get("nonce"), str):
            conn.close()
            raise DebugConnectionError(
                f"{host}:{port} did not answer as a pxpool debugger: {hello!r}"
            )
        conn.nonce = hello["nonce"]
        return conn

    # ------------------------------------------------------------ messages

    def send(self, body: dict[str, Any]) -> None:
        self._sent += 1
        payload = dict(body, nonce=self.nonce, seq=self._sent, origin=self.side)
        text = json.dumps(payload, separators=(",", ":"))
        self._write({"body": text, "sig": sign(self.key, text)})

    def recv(self, timeout: float | None) -> dict[str, Any]:
        """The next message, after checking signature, nonce, direction and order."""
        message = self._read(timeout)
        if "error" in message and "body" not in message:
            raise DebugAuthError(
                f"The engine refused the debugger connection: {message['error']}. "
                "Connect with the pool's own client (`pool.debug(k)`), which holds its key."
            )
        text, signature = message.get("body"), message.get("sig")
        if not isinstance(text, str) or not isinstance(signature, str):
            raise DebugAuthError("unsigned message")
        if not hmac.compare_digest(sign(self.key, text), signature):
            raise DebugAuthError("bad signature (the pool's key does not match)")
        try:
            body = json.loads(text)
        except ValueError:
            raise DebugConnectionError("malformed message (the signed body is not JSON)") from None
        if not isinstance(body, dict):
            raise DebugConnectionError("malformed message (the signed body is not an object)")
        expected_origin = "client" if self.side == "engine" else "engine"
        if body.get("nonce") != self.nonce or body.get("origin") != expected_origin:
            raise DebugAuthError("message from another connection (nonce or origin mismatch)")
        if body.get("seq") != self._received + 1:
            raise DebugAuthError(f"message out of order (seq {body.get('seq')!r})")
        self._received += 1
        for name in ("nonce", "seq", "origin"):
            del body[name]
        return body

    def refuse(self, reason: str) -> None:
        """Engine side: tell the peer why, unsigned, and close."""
        try:
            self._write({"error": f"refused: {reason}"})
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------ framing

    def _write(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def _read(self, timeout: float | None) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise DebugConnectionError(f"message longer than {MAX_LINE} bytes")
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise DebugConnectionError(f"no message within {timeout:g}s") from None
            except OSError as exc:
                raise DebugConnectionError(f"connection lost: {exc}") from exc
            if not chunk:
                raise DebugConnectionError("connection closed by the other side")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise DebugConnectionError("malformed message (not JSON)") from None
        if not isinstance(message, dict):
            raise DebugConnectionError("malformed message (not an object)")
        return message
