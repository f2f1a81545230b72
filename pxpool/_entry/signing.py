"""Message signatures under the pool's key, shared by pxpool's own channels.

ipyparallel signs its messages with HMAC-SHA256 under a random per-pool key. pxpool's
own channels between the client and agents on engines (the debugger's JSON lines, the
task lane's zmq frames) sign theirs with the same key and the same hash, so holding
the pool's connection file is what it takes to talk to an engine, on any channel.
This module is standard library only: engine-side agents and client code import it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

DIGEST = hashlib.sha256


def sign(key: bytes, text: str) -> str:
    """The hex signature of one text message (the debugger's JSON lines)."""
    return hmac.new(key, text.encode(), DIGEST).hexdigest()


class FrameSigner:
    """Signs and checks multipart messages: every frame counts, with its length, so
    bytes cannot be moved from one frame to the next under the same signature."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a signing key must not be empty")
        self._prototype = hmac.new(key, digestmod=DIGEST)

    def sign(self, frames: Iterable[Any]) -> bytes:
        """The hex signature (as bytes) of ``frames`` (bytes-like objects)."""
        mac = self._prototype.copy()
        for frame in frames:
            view = memoryview(frame)
            mac.update(view.nbytes.to_bytes(8, "little"))
            mac.update(view.cast("B") if view.ndim != 1 or view.format != "B" else view)
        return mac.hexdigest().encode()

    def verify(self, signature: Any, frames: Iterable[Any]) -> bool:
        """True if ``signature`` is the signature of ``frames`` under this key."""
        expected = self.sign(frames)
        return hmac.compare_digest(expected, bytes(signature))
