"""Engine side of the task lane: replies of tiny tasks travel together.

A run message brings up to 32 tasks. When they are tiny (a no-op runs in a few
microseconds), one reply message per task costs more than the tasks: on the client a
receive, a signature check and a JSON decode each, on the engine a signature and a
send each. So a reply may wait for its neighbours' and leave with them in one message,
but only while that costs the client nothing it would notice:

- only the reply of a task that ran under ``SHORT`` seconds, and only while the next
  task is already waiting on the engine (the agent decides; see ``hold`` of
  :meth:`Outbox.reply`);
- a held reply leaves once the oldest held one is ``HOLD`` seconds old, or ``MAX_HELD``
  are held, or the agent's turn of tasks ends (:meth:`Outbox.flush`);
- a task that turns out long must not keep finished results from the client: while
  replies are held, a watch thread wakes every ``HOLD`` seconds and sends those older
  than that itself. A zmq socket may be used by more than one thread when every use is
  under one lock (:attr:`Outbox.lock`), which the agent takes to read the socket too.
  The watch needs the GIL: Python code lets it in within the interpreter's switch
  interval (5 ms), a C call that holds the GIL throughout only when it returns.

A held reply's parts are copied when it is held: a result's buffers may be views of the
engine's own arrays (ipyparallel serializes numpy arrays without a copy), and the next
task may change them in place before the reply leaves.

``started`` notices (a timeout's clock) and ``cancelled`` answers are never held; they
send what is held before them, so replies keep their order.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import wire

SHORT = 0.0005  # seconds: a task that ran longer sends its reply at once
HOLD = 0.001  # seconds a finished task's reply may wait for the next ones'
MAX_HELD = 64  # replies held at most


class Outbox:
    """The agent's replies on its ROUTER socket (see the module docstring)."""

    def __init__(
        self, socket: Any, signer: wire.FrameSigner, engine_id: int, max_wait: float = HOLD
    ) -> None:
        self.socket = socket
        self.signer = signer
        self.engine_id = engine_id
        self.lock = threading.Lock()  # every use of the socket, from either thread
        self._queue: list[tuple[Any, list[Any], list[Any], list[str] | None]] = []
        self.max_wait = max_wait  # seconds a held reply may wait (HOLD)
        self._since = 0.0  # when the oldest held reply was held
        self._closed = threading.Event()
        self._armed = threading.Event()  # set while replies are held: the watch runs
        self._watch: threading.Thread | None = None
        self.messages = 0  # reply messages sent
        self.held = 0  # replies that waited for later ones

    def reply(
        self,
        ident: Any,
        entry: list[Any],
        parts: list[Any],
        printed: list[str] | None = None,
        hold: bool = False,
    ) -> None:
        """Send one task's reply ``entry`` (``[x, status, parts, seconds]``), or hold it
        with ``hold`` for the next ones' (within the limits of the module docstring)."""
        if hold:  # a result's buffers may be views of engine state the next task changes
            parts = [part if isinstance(part, bytes) else bytes(part) for part in parts]
        with self.lock:
            self._queue.append((ident, entry, parts, printed))
            self.held += hold
            if not hold or len(self._queue) >= MAX_HELD:
                self._send_all()
            elif len(self._queue) == 1:
                self._since = time.monotonic()
                self._arm()
            elif time.monotonic() - self._since >= self.max_wait:
                self._send_all()

    def flush(self) -> None:
        """Send every held reply (the agent's turn of tasks ended)."""
        with self.lock:
            if self._queue:
                self._send_all()

    def close(self) -> None:
        """Send what is held and end the watch thread (the socket stays open)."""
        self.flush()
        self._closed.set()
        self._armed.set()
        if self._watch is not None:
            self._watch.join(5.0)

    def _arm(self) -> None:  # under self.lock
        if self._watch is None:
            self._watch = threading.Thread(
                target=self._watching, name="pxpool-lane-outbox", daemon=True
            )
            self._watch.start()
        self._armed.set()

    def _watching(self) -> None:
        """Send replies held longer than ``max_wait`` while the main thread runs a task."""
        while not self._closed.is_set():
            self._armed.wait()
            if self._closed.wait(self.max_wait):
                return
            with self.lock:
                if self._queue and time.monotonic() - self._since >= self.max_wait:
                    self._send_all()
                if not self._queue:
                    self._armed.clear()

    def _send_all(self) -> None:  # under self.lock
        """One message per client of everything held, in the order held."""
        queued, self._queue = self._queue, []
        by_client: dict[bytes, list[tuple[Any, list[Any], list[Any], list[str] | None]]] = {}
        for item in queued:
            by_client.setdefault(bytes(item[0]), []).append(item)
        for items in by_client.values():
            header: dict[str, Any] = {"e": self.engine_id, "r": [item[1] for item in items]}
            printed = {str(entry[0]): said for _, entry, _, said in items if said}
            if printed:  # [stdout, stderr] of each task that printed anything
                header["p"] = printed
            parts = [part for item in items for part in item[2]]
            frames = wire.pack(self.signer, header, parts)
            self.socket.send_multipart([items[0][0], *frames])
            self.messages += 1
