"""Engine side of the task lane: how replies leave, without keeping the next task waiting.

A reply costs the engine a signature and a zmq send (~100 us on a busy 2-core machine),
on the main thread, between one task and the next. Two kinds of reply leave otherwise,
both only while the next task is already waiting on the engine (the agent decides):

- **held**: the reply of a task that ran under ``SHORT`` seconds waits for its
  neighbours' and leaves with them in one message. When tasks are tiny (a no-op runs
  in a few microseconds), one message per task costs more than the tasks: on the
  client a receive, a signature check and a JSON decode each. Held replies leave once
  the oldest is ``HOLD`` seconds old, or ``MAX_HELD`` are held, or the agent's turn of
  tasks ends (:meth:`Outbox.flush`).
- **handed off**: the reply of a task that mostly waited (``time.sleep``, I/O: less
  CPU time than half its run time) is sent by the watch thread while the next task
  runs, which then most likely waits too and lets the thread in at once. The end of a
  turn leaves it (and what waits with it) to that thread too.

The watch thread also sends held replies that are due while a long task runs, so a
long task never keeps a finished result from the client. A zmq socket may be used by
more than one thread when every use is under one lock (:attr:`Outbox.lock`), which the
agent takes to read the socket too. The watch needs the GIL: a task that waits lets it
in at once, Python code within the interpreter's switch interval (5 ms), a C call that
holds the GIL throughout only when it returns. So a reply leaves at most that late.

A reply's parts are copied when it is held or handed off: a result's buffers may be
views of the engine's own arrays (ipyparallel serializes numpy arrays without a copy),
and the next task may change them in place before the reply leaves.

``started`` notices (a timeout's clock) and ``cancelled`` answers are sent at once;
they send what waits before them, so replies keep their order.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import wire

SHORT = 0.0005  # seconds: a task that ran longer sends its reply at once
HOLD = 0.001  # seconds a finished task's reply may wait for the next ones'
MAX_HELD = 64  # replies held at most
IDLE_CHECK = 1.0  # seconds between looks of an idle watch thread

Queued = tuple[Any, list[Any], list[Any], list[str] | None]  # ident, entry, parts, printed


class Outbox:
    """The agent's replies on its ROUTER socket (see the module docstring)."""

    def __init__(
        self, socket: Any, signer: wire.FrameSigner, engine_id: int, max_wait: float = HOLD
    ) -> None:
        self.socket = socket
        self.signer = signer
        self.engine_id = engine_id
        self.lock = threading.Lock()  # every use of the socket, from either thread
        self._wake = threading.Condition(self.lock)  # the watch waits on it
        self._queue: list[Queued] = []
        self.max_wait = max_wait  # seconds a held reply may wait (HOLD)
        self._since = 0.0  # when the oldest waiting reply was queued
        self._now = False  # a handed-off reply waits: the watch sends at once
        self._closed = False
        self._watch: threading.Thread | None = None
        self.messages = 0  # reply messages sent
        self.held = 0  # replies that waited for later ones
        self.handed = 0  # replies the watch thread sent while the next task ran

    def reply(
        self,
        ident: Any,
        entry: list[Any],
        parts: list[Any],
        printed: list[str] | None = None,
        hold: bool = False,
        hand_off: bool = False,
    ) -> None:
        """Send one task's reply ``entry`` (``[x, status, parts, seconds]``), or hold it
        for the next ones' (``hold``), or leave it to the watch thread (``hand_off``)."""
        if hold or hand_off:  # a result's buffers may be views of engine state
            parts = [part if isinstance(part, bytes) else bytes(part) for part in parts]
        with self.lock:
            if not self._queue:
                self._since = time.monotonic()
            self._queue.append((ident, entry, parts, printed))
            self.held += hold
            self.handed += hand_off
            if not (hold or hand_off) or len(self._queue) >= MAX_HELD:
                self._send_all()
            elif not hand_off and time.monotonic() - self._since >= self.max_wait:
                self._send_all()
            else:
                self._now = self._now or hand_off
                self._start_watch()
                if hand_off or len(self._queue) == 1:  # else the watch knows the time
                    self._wake.notify()

    def flush(self) -> None:
        """Send every waiting reply (the agent's turn of tasks ended), unless one was
        handed off: the watch thread sends them all as soon as it runs."""
        with self.lock:
            if self._queue and not self._now:
                self._send_all()

    def close(self) -> None:
        """Send what waits and end the watch thread (the socket stays open)."""
        with self.lock:
            if self._queue:
                self._send_all()
            self._closed = True
            self._wake.notify()
        if self._watch is not None:
            self._watch.join(5.0)

    def _start_watch(self) -> None:  # under self.lock
        if self._watch is None:
            self._watch = threading.Thread(
                target=self._watching, name="pxpool-lane-outbox", daemon=True
            )
            self._watch.start()

    def _watching(self) -> None:
        """Send handed-off replies at once and held ones once due, while the main
        thread runs the next task."""
        with self.lock:
            while not self._closed:
                if not self._queue:
                    self._wake.wait(IDLE_CHECK)  # a reply or close() notifies sooner
                elif self._now or time.monotonic() - self._since >= self.max_wait:
                    self._send_all()
                else:
                    self._wake.wait(self._since + self.max_wait - time.monotonic())

    def _send_all(self) -> None:  # under self.lock
        """One message per client of everything waiting, in the order queued."""
        queued, self._queue, self._now = self._queue, [], False
        by_client: dict[bytes, list[Queued]] = {}
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
