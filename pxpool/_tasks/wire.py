"""Both sides of the task lane: how one message travels, signed with the pool's key.

A message is a header (a small JSON object) and parts (bytes-like). It travels as zmq
frames: the first holds the signature, the header and every small part back to back;
each large part (a numpy buffer, say) follows in a frame of its own, never copied. One
frame per message is the common case, so a task costs one send and one receive. The
signature is HMAC-SHA256 under the pool's key over the first frame's signed section and
every large frame (:class:`pxpool._entry.signing.FrameSigner`): nothing of a message is
unpickled, let alone run, before it is checked.

Client to engine (a DEALER per engine to the engine's ROUTER):

- ``{"op": "run", "c": client, "q": seq, "tasks": [[x, task, na, nk, s, r], ...]}``: one
  or more tasks; each has ``1 + na + nk`` parts: its function (cloudpickled), then its
  arguments and keyword arguments as ipyparallel's ``serialize_object`` makes them.
  ``x`` names the task's run in replies and cancels; ``s`` asks for a ``started``
  notice (tasks with a timeout: their clock starts when they start); ``r``, when not
  empty, names a runner of pxpool's engine side (``module:function``) that gets the
  function and the arguments (``pool.map``'s chunks), instead of calling it.
- ``{"op": "cancel", "c": client, "q": seq, "x": [x, ...]}``: drop those runs if the
  engine has not started them (it answers ``cancelled``).

``c`` is a random token per client and ``q`` increases with every message of that
client: an engine refuses a number it has seen, so a recorded message cannot be replayed.

Engine to client: ``{"e": engine, "r": [[x, status, parts, seconds], ...]}`` where status
is ``ok`` (parts: the result's ``serialize_object`` frames), ``plain`` (one part: the
result pickled, plain values that need no canning: :mod:`pxpool._tasks.plain`), ``error`` (one JSON part:
``ename``, ``evalue``, ``traceback``), ``started`` or ``cancelled`` (no parts); seconds is
how long the task ran; the parts of each entry follow those of the one before (tiny
tasks' replies travel together: :mod:`pxpool._tasks.outbox`). A task that printed adds
``"p": {"x": [stdout, stderr]}`` (:mod:`pxpool._tasks.printed`).

With ``[controller] encrypt = true`` the lane is encrypted too (CurveZMQ, as the pool's
other sockets): each engine's agent makes a key pair of its own and gives its public key
in its install answer, which reaches the client over the pool's encrypted channel
(:func:`serve_encrypted`, :func:`connect_encrypted`). Messages stay signed: the
signature, not the client's key, says who may run tasks.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from .._entry.signing import FrameSigner

RUN, CANCEL = "run", "cancel"
OK, PLAIN, ERROR = "ok", "plain", "error"
STARTED, CANCELLED = "started", "cancelled"
SIG = 64  # bytes of a hex SHA-256 signature
LARGE = 64 * 1024  # bytes: a part this large travels in a frame of its own
MAX_HEADER = 1 << 20  # bytes; a longer header is refused before it is parsed
_LENGTH = struct.Struct("<I")
# made once: json.dumps with separators makes an encoder on every call
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_DECODE = json.JSONDecoder().decode

__all__ = ["FrameSigner", "pack", "unpack"]


def pack(signer: FrameSigner, header: dict[str, Any], parts: Sequence[Any] = ()) -> list[Any]:
    """The frames of one message (see the module docstring)."""
    sizes: list[int] = []
    small: list[Any] = []
    large: list[Any] = []
    for part in parts:
        size = memoryview(part).nbytes
        if size >= LARGE:
            sizes.append(-1)
            large.append(part)
        else:
            sizes.append(size)
            small.append(part)
    head = _ENCODE({**header, "k": sizes}).encode()
    signed = b"".join([_LENGTH.pack(len(head)), head, *small])
    return [signer.sign([signed, *large]) + signed, *large]


def unpack(signer: FrameSigner, frames: Sequence[Any]) -> tuple[dict[str, Any], list[Any]] | str:
    """``(header, parts)`` of a message whose signature holds, else why it is refused."""
    if not frames:
        return "empty message"
    first = memoryview(frames[0]).cast("B")
    if first.nbytes < SIG + _LENGTH.size:
        return "not a task lane message (too short)"
    signed, large = first[SIG:], list(frames[1:])
    if not signer.verify(first[:SIG], [signed, *large]):
        return "bad or missing signature (not signed with the pool's key)"
    (length,) = _LENGTH.unpack_from(signed)
    if length > MAX_HEADER or _LENGTH.size + length > signed.nbytes:
        return "malformed header length"
    try:
        header = _DECODE(str(signed[_LENGTH.size : _LENGTH.size + length], "utf-8"))
    except ValueError:  # also a header that is not UTF-8
        return "malformed header (the signed header is not JSON)"
    if not isinstance(header, dict) or not isinstance(header.get("k"), list):
        return "malformed header (not an object with part sizes)"
    parts: list[Any] = []
    offset = _LENGTH.size + length
    for size in header.pop("k"):
        if not isinstance(size, int):
            return "malformed header (a part size is not a number)"
        if size < 0:
            if not large:
                return "malformed message (a large part is missing)"
            parts.append(large.pop(0))
        else:
            parts.append(signed[offset : offset + size])
            offset += size
    if offset != signed.nbytes or large:
        return "malformed message (parts do not match their sizes)"
    return header, parts


def serve_encrypted(socket: Any) -> str:
    """Make ``socket`` (the agent's ROUTER, before it binds) a CurveZMQ server with a
    fresh key pair; its public key, which clients need."""
    import zmq

    public, secret = zmq.curve_keypair()
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    return public.decode("ascii")


def connect_encrypted(socket: Any, server_key: str, pair: tuple[bytes, bytes]) -> None:
    """Make ``socket`` (a client's DEALER, before it connects) a CurveZMQ client of the
    agent whose public key is ``server_key``; ``pair`` is the client's own key pair."""
    import zmq

    socket.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
    socket.setsockopt(zmq.CURVE_PUBLICKEY, pair[0])
    socket.setsockopt(zmq.CURVE_SECRETKEY, pair[1])


def dealer(address: str, server_key: str = "", pair: tuple[bytes, bytes] | None = None) -> Any:
    """A client's DEALER socket connected to the agent at ``address``: a CurveZMQ client
    with the key ``pair`` when the agent gave its public ``server_key``."""
    import zmq

    sock: Any = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if server_key:
        connect_encrypted(sock, server_key, pair or zmq.curve_keypair())
    sock.connect(address)
    return sock
