"""The pool's side of the dashboard: publish while a page is open, run what it asks.

One :class:`Dashboard` per :class:`pxpool.Pool`. Its thread wakes every ``POLL``
seconds and looks at one file's time; only while the server says a page is open
(:func:`files.wanted`) does it write the pool's state and take the actions the page
queued, each run on a thread of its own (a stop of the pool ends this thread, so it must
not run on it). Of several processes that attached one pool, the one holding the
publisher lock publishes. The thread starts with the pool's engines (an engine hook) or
on ``pool.dashboard_url``, and ends with the pool.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from .._core.events import TaskEvent
from .._core.state import PoolState
from ..health import EngineSnapshot, summarize
from . import files, stream

if TYPE_CHECKING:
    from .._core.core import PoolCore

__all__ = [
    "ACTIONS",
    "BASE_URL_ENV",
    "SERVER_URL_ENV",
    "Dashboard",
    "DashboardMethods",
    "DashboardPool",
]

log = logging.getLogger("pxpool.dashboard")
POLL = 0.5  # seconds between looks at the page's wishes
WANT_TTL = 10.0  # seconds a page's last request keeps the publishing on
MAX_EVENTS = 4000  # task events per state: the window's newest
SERVER_URL_ENV = "PXPOOL_JUPYTER_URL"  # set by the server extension: kernels inherit it
BASE_URL_ENV = "PXPOOL_JUPYTER_BASE_URL"
ACTIONS = ("interrupt", "restart", "stop-engine", "scale", "stop", "logs")
GONE = (PoolState.STOPPED, PoolState.FAILED, PoolState.NEW)


class DashboardPool(Protocol):
    """What the dashboard uses of a pool (:class:`pxpool.Pool` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def client(self) -> Any: ...
    @property
    def engines(self) -> int: ...
    def health_snapshots(self) -> list[EngineSnapshot]: ...
    def restart_sync(self, engine_id: int) -> int: ...
    def remove_engines_sync(self, engine_ids: list[int]) -> list[int]: ...
    def scale_sync(self, n: int) -> list[int]: ...
    def stop_sync(self) -> None: ...


class Dashboard:
    """See the module docstring; ``window``: seconds of task events published."""

    def __init__(self, core: PoolCore, pool: DashboardPool, window: float = 300.0) -> None:
        self.core = core
        self.pool = pool
        self.window = window
        self.last_action: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._held: IO[bytes] | None = None
        core.add_engine_hook(self.engines_joined)
        core.teardown_hooks.append(self.teardown)

    def figure(self, window: float, height: int | None = None) -> dict[str, Any]:
        """The task stream of the last ``window`` seconds (the panel's compact one)."""
        now = time.time()
        events = [e.as_list() for e in self.core.task_events.events(since=now - window)]
        return stream.figure(events, self.core.registered_ids(), now, window, height)

    # ------------------------------------------------------------ the pool's side

    def url(self) -> str | None:
        """The page's address in the Jupyter server that runs this kernel, or None
        outside one (or one without the extension); starts publishing."""
        server = os.environ.get(SERVER_URL_ENV)
        if not server:
            return None
        self.start()
        return f"{server.rstrip('/')}/pxpool/dashboard/{urllib.parse.quote(self.core.name)}"

    def path(self) -> str | None:
        """The page's path under the server (a link in a page that server served)."""
        base = os.environ.get(BASE_URL_ENV)
        if base is None or not os.environ.get(SERVER_URL_ENV):
            return None
        self.start()
        return f"{base.rstrip('/')}/pxpool/dashboard/{urllib.parse.quote(self.core.name)}"

    def engines_joined(self, core: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: hub tasks go into the ring (a new client after an idle release
        too), and the publisher runs."""
        self.start()

    def start(self) -> None:
        """Record hub tasks, and publish while a page is open (also for a pool attached
        from another process, whose engine hooks do not run for the engines it found)."""
        client = self.core.client
        if client is not None:
            client.task_events = self.core.task_events
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                if not self._stop.is_set():
                    return
                thread.join(POLL + 1.0)  # the last life's thread is ending: a restarted pool
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"pxpool-dashboard-{self.core.name}", daemon=True
            )
            self._thread.start()

    def teardown(self, name: str) -> None:
        """Teardown hook of the pool: the thread ends within ``POLL`` (not waited for:
        this runs on the pool's event loop, which a stop should not hold up)."""
        self._stop.set()

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            while not self._stop.wait(POLL):
                if self.core.state in GONE:
                    return
                path = files.dashboard_dir(self.core.name)  # made by the server's first look
                if path is None or not files.wanted(path, WANT_TTL) or not self._own(path):
                    continue  # no page open: nothing to do, nothing written
                for request_id, request in files.take_requests(path):
                    threading.Thread(
                        target=self._act,
                        args=(path, request_id, request),
                        name="pxpool-dashboard-action",
                        daemon=True,
                    ).start()
                self._publish(path)
        except Exception:  # a failure here must not pass silently, nor touch the pool
            log.exception("pxpool: the dashboard of pool %r stopped", self.core.name)
        finally:
            if self._held is not None:
                self._held.close()  # releases the lock
                self._held = None

    def _own(self, path: Path) -> bool:
        """Whether this process publishes the pool (it holds the lock, or takes it now)."""
        if self._held is not None:
            return True
        handle = open(path / files.LOCK, "ab")  # noqa: SIM115 (held for the thread's life)
        os.chmod(handle.fileno(), 0o600)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._held = handle
        return True

    def state(self) -> dict[str, Any]:
        """What the page shows, as JSON values."""
        core, now = self.core, time.time()
        snapshots = self.pool.health_snapshots() if core.state is not PoolState.NEW else []
        events = core.task_events.events(since=now - self.window)[-MAX_EVENTS:]
        return {
            "pool": core.name,
            "profile": core.profile.name,
            "state": str(core.state),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "written": now,
            "window": self.window,
            "engines": [s.as_row() for s in snapshots],
            "summary": summarize(snapshots),
            "events": [e.as_list() for e in events],
            "recorded": core.task_events.recorded,
            "maps": core.task_events.maps(),
            "actions": [a for a in ACTIONS if a != "logs" or self._logs() is not None],
            "last_action": self.last_action,
        }

    def _publish(self, path: Path) -> None:
        files.write_state(path, self.state())

    def _logs(self) -> Any:
        return getattr(self.pool, "logs", None)

    # ------------------------------------------------------------ actions

    def _act(self, path: Path, request_id: str, request: dict[str, Any]) -> None:
        action = str(request.get("action"))
        try:
            text = self.run_action(action, request)
            reply: dict[str, Any] = {"ok": True, "action": action, "text": text}
        except Exception as exc:
            reply = {"ok": False, "action": action, "error": f"{type(exc).__name__}: {exc}"}
        reply["at"] = time.time()
        self.last_action = {k: v for k, v in reply.items() if k != "text"}
        try:
            files.write_reply(path, request_id, reply)
            if files.wanted(path, WANT_TTL):
                self._publish(path)
        except OSError:  # the pool stopped and its directory went with it
            pass

    def run_action(self, action: str, request: dict[str, Any]) -> str:
        """Run one action the page asked for; what it says back (log text, or "")."""
        pool = self.pool
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        if action == "stop":
            pool.stop_sync()
        elif action == "scale":
            pool.scale_sync(_whole(request, "n", 0))
        else:
            engine_id = _whole(request, "engine_id", 0)
            if action == "interrupt":
                pool.client.send_signal("SIGINT", targets=[engine_id], block=True)
            elif action == "restart":
                pool.restart_sync(engine_id)
            elif action == "stop-engine":
                pool.remove_engines_sync([engine_id])
            else:
                logs = self._logs()
                if logs is None:
                    raise ValueError("this pxpool has no pool.logs; update pxpool")
                return str(logs(engine_id, tail=_whole(request, "tail", 1)))
        return ""


def _whole(request: dict[str, Any], key: str, least: int) -> int:
    value = request.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{key} must be a whole number >= {least}; got {value!r}")
    return value


class DashboardMethods:
    """The dashboard half of :class:`pxpool.Pool`'s methods, over its :class:`Dashboard`."""

    _dashboard: Dashboard

    @property
    def dashboard_url(self) -> str | None:
        """This pool's live dashboard page (engines, task stream, maps, actions) in the
        Jupyter server that runs this kernel; None outside one, or where pxpool's server
        extension is off (``jupyter server extension enable pxpool._dashboard.server``)."""
        return self._dashboard.url()

    def task_events(self, seconds: float | None = None) -> list[TaskEvent]:
        """Tasks and map chunks that finished (in the last ``seconds``), oldest first:
        engine, function, start and end (``time.time()``), ok, route ("lane"/"hub")."""
        since = None if seconds is None else time.time() - seconds
        return self._dashboard.core.task_events.events(since=since)
