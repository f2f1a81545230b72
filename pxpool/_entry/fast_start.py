"""A controller that is ready sooner, and engines that join it as soon as they can.

**No settle sleep.** ipyparallel's controller sleeps 0.25 s while it sets up its hub,
after creating the task database and before it writes the connection files engines
wait for. Nothing waits on that pause: its sockets connect later, when the schedulers
start. :func:`initialize_without_settle_sleep` runs the controller's initialization
with that one sleep skipped.

**Quick hearts.** ipyparallel's hub finishes an engine's registration when its heart monitor reports a
new heart, and the monitor looks for new hearts only at its next beat, among the
hearts that answered the previous beat's ping. An engine that registered therefore
waits one to two heartbeat periods (0.5-1 s at pxpool's 500 ms) before the pool may
use it: most of a 2-engine pool's start once the engines themselves fork in
milliseconds. In the controller process (:mod:`.controller_main`) the monitor here

1. watches its ping socket (a zmq socket monitor) and, when a heart connects, pings
   again with the current beat's stamp every ``QUICK_PING_MS`` until that heart
   answered (at most ``QUICK_PINGS`` times). Hearts that answered this beat already
   answer again, which adds nothing: responses are a set;
2. reports a heart it does not know the moment it answers, instead of at the next
   beat. A heart the monitor gave up on that answers again is reported as ipyparallel
   would at its next beat; the hub ignores hearts it has no registration for.

Heartbeats, missed-beat counting and failures are otherwise ipyparallel's own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq
from tornado.ioloop import PeriodicCallback
from zmq.eventloop.zmqstream import ZMQStream

SETTLE_SLEEP_SECONDS = 0.25  # the pause in ipyparallel's IPController.init_hub
QUICK_PING_MS = 10
QUICK_PINGS = 50  # per new connection: half a second, then the normal beat goes on

log = logging.getLogger("pxpool.controller")


class QuickPings:
    """Pings at the current stamp while connected hearts have not answered yet."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.waiting = 0  # connections whose heart has not answered yet
        self.left = 0
        self.callback: PeriodicCallback | None = None

    def connected(self, _frames: list[bytes]) -> None:
        """A heart connected (its handshake succeeded): ping until it answered."""
        self.waiting += 1
        self.left = QUICK_PINGS
        if self.callback is None:
            self.callback = PeriodicCallback(self._ping, QUICK_PING_MS)
            self.callback.start()

    def answered(self) -> None:
        """A heart the monitor did not know answered."""
        self.waiting = max(0, self.waiting - 1)
        if self.waiting == 0:
            self._stop()

    def _ping(self) -> None:
        if self.left <= 0 or self.waiting == 0:
            self.waiting = 0
            self._stop()
            return
        self.left -= 1
        self.monitor.ping_stream.send(str(self.monitor.lifetime).encode("ascii"))
        self.monitor.ping_stream.flush()

    def _stop(self) -> None:
        if self.callback is not None:
            self.callback.stop()
            self.callback = None


class _TimeWithoutSettle:
    """The ``time`` module as ipyparallel's controller module sees it while it
    initializes: the same, but its settle sleep returns at once."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds != SETTLE_SLEEP_SECONDS:
            time.sleep(seconds)


def initialize_without_settle_sleep(app: Any) -> None:
    """``app.initialize()`` of an IPController, without its 0.25 s settle sleep."""
    from ipyparallel.controller import app as controller_app

    real = controller_app.time
    controller_app.time = _TimeWithoutSettle()
    try:
        app.initialize()
    finally:
        controller_app.time = real


def install_quick_hearts() -> None:
    """Give ipyparallel's HeartMonitor class both behaviours; before the controller
    starts its monitor (in this process: pxpool's controllers run it as a thread)."""
    from ipyparallel.controller.heartmonitor import HeartMonitor

    if getattr(HeartMonitor, "pxpool_quick_hearts", False):
        return
    original_start = HeartMonitor.start
    original_pong = HeartMonitor.handle_pong

    def start(self: Any) -> None:
        original_start(self)
        self.pxpool_pings = QuickPings(self)
        try:
            events = self.ping_stream.socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        except zmq.ZMQError as exc:  # no monitor: engines join at the next beat, as before
            log.warning("pxpool: heart monitor without quick pings: %r", exc)
            return
        self.pxpool_events = ZMQStream(events)
        self.pxpool_events.on_recv(self.pxpool_pings.connected)

    def handle_pong(self: Any, msg: list[bytes]) -> None:
        original_pong(self, msg)
        heart = msg[0]
        if heart in self.responses and heart not in self.hearts:
            self.handle_new_hearts({heart})
            pings = getattr(self, "pxpool_pings", None)
            if pings is not None:
                pings.answered()

    HeartMonitor.start = start
    HeartMonitor.handle_pong = handle_pong
    HeartMonitor.pxpool_quick_hearts = True
