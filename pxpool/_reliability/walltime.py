"""Draining engines before a walltime or on preemption, and replacing them ahead of time.

Batch jobs ask the scheduler to signal their engines ``walltime_signal`` seconds
before the walltime (SLURM ``--signal``, SGE ``-notify`` with ``s_rt``, LSF ``-wa``;
see the system modules). On that signal (SIGUSR1 or SIGUSR2), or SIGTERM, an engine
*drains*: it keeps running the task it has, hands every load-balanced task that
reaches it meanwhile back to the scheduler (as ipyparallel's ``UnmetDependency``,
so the scheduler sends it to another engine without the client seeing a failure),
then unregisters from the hub and exits cleanly. A task still running when the
scheduler kills the job is retried by ``pool.map``/``pool.apply`` like any task whose
engine died.

The engine writes what it does into ``<pool dir>/drain/<engine id>.json`` (the pool's
runtime directory, which engines in batch jobs share with the client: they read the
connection files from it). The health table reads those records (``draining``, then
``stopped (walltime)``), the supervisor does not count such an exit as a failure, and
with ``replace_on_walltime = true`` a watcher starts a replacement job as soon as an
engine starts draining.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core import runtime as _runtime
from .._core.state import PoolState

if TYPE_CHECKING:
    from .._core.core import PoolCore

log = logging.getLogger("pxpool.walltime")
DRAIN_DIR = "drain"
SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")
LINGER = 0.3  # seconds an engine that just ran load-balanced work keeps handing tasks back
RECENT_TASK = 1.0  # ...when its last load-balanced task is at most this old
INSTALL_TIMEOUT = 10.0
WATCH_INTERVAL = 0.5  # seconds between looks for draining engines (replace_on_walltime)

# ---------------------------------------------------------------- engine side

_DRAIN: _Drain | None = None


class _Drain:
    """The engine's signal handlers and its hand-back of load-balanced tasks."""

    def __init__(self, app: Any, kernel: Any, folder: Path) -> None:
        self.app = app
        self.kernel = kernel
        self.folder = folder
        self.engine_id = int(kernel.engine_id)
        self.signal: str | None = None
        self.since: float | None = None
        self.last_task = 0.0  # monotonic time a load-balanced task last started or ended
        self.loop = asyncio.get_event_loop()
        self._apply = kernel.shell_handlers["apply_request"]
        kernel.shell_handlers["apply_request"] = self.apply_request
        for name in SIGNALS:
            signal.signal(getattr(signal, name), self.on_signal)

    def apply_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> Any:
        balanced = "follow" in (parent.get("metadata") or {})  # sent by a LoadBalancedView
        if not balanced:
            return self._apply(stream, ident, parent)
        if self.since is not None:
            return self._hand_back(stream, ident, parent)
        self.last_task = time.monotonic()
        try:
            return self._apply(stream, ident, parent)
        finally:
            self.last_task = time.monotonic()

    def _hand_back(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        """Reply ``UnmetDependency``: the scheduler sends the task to another engine."""
        from ipyparallel.util import utcnow

        kernel = self.kernel
        self.last_task = time.monotonic()
        content = {
            "status": "error",
            "ename": "UnmetDependency",
            "evalue": f"engine {self.engine_id} is leaving the pool ({self.signal})",
            "traceback": [],
            "engine_info": kernel.get_engine_info(method="apply"),
        }
        metadata = {
            "started": utcnow(),
            "dependencies_met": False,
            "engine": kernel.ident,
            "status": "error",
            "engine_info": kernel.get_engine_info(),
        }
        kernel.session.send(
            stream, "apply_reply", content, parent=parent, ident=ident, metadata=metadata
        )

    def on_signal(self, signum: int, frame: Any) -> None:
        """Runs on the main thread between bytecodes, maybe inside a task: only note
        the drain; ``leave`` runs on the event loop once the task has returned."""
        if self.since is not None:
            return
        self.signal = signal.Signals(signum).name
        self.since = time.time()
        self.write("draining")
        self.loop.call_soon_threadsafe(self.leave)

    def leave(self) -> None:
        """Unregister (the scheduler stops sending tasks here), hand back what is on
        its way for a moment if tasks were flowing, then stop the engine."""
        app = self.app
        try:
            app.session.send(app.registrar, "unregistration_request", content={"id": app.id})
        except Exception:  # the nanny reports the exit too
            log.exception("pxpool: engine %s could not unregister", self.engine_id)
        recent = time.monotonic() - self.last_task < RECENT_TASK
        self.loop.call_later(LINGER if recent else 0.0, self.stop)

    def stop(self) -> None:
        self.write("left")
        with warnings.catch_warnings():  # tornado deprecates add_callback_from_signal
            warnings.simplefilter("ignore", DeprecationWarning)
            # ipyparallel's engine app stops itself only through this signal handler
            self.app._signal_stop(signal.SIGTERM, None)  # noqa: SLF001 - no public stop

    def write(self, state: str) -> None:
        record = {
            "engine_id": self.engine_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "signal": self.signal,
            "since": self.since,
            "state": state,
            "time": time.time(),
        }
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            _runtime.write_private_json(self.folder / f"{self.engine_id}.json", record)
        except OSError as exc:  # a runtime dir the engine cannot reach: health misses it
            log.warning("pxpool: engine %s could not record its drain: %r", self.engine_id, exc)


def install(pool_dir: str) -> dict[str, Any]:
    """Run on an engine (main thread): handle SIGUSR1/SIGUSR2/SIGTERM by draining, and
    forget a drain record an earlier process under this engine id left."""
    global _DRAIN
    from ipyparallel.engine.app import IPEngine
    from IPython.core.getipython import get_ipython

    kernel = get_ipython().kernel
    if _DRAIN is None:
        _DRAIN = _Drain(IPEngine.instance(), kernel, Path(pool_dir) / DRAIN_DIR)
    stale = _DRAIN.folder / f"{_DRAIN.engine_id}.json"
    try:
        if json.loads(stale.read_text()).get("pid") != os.getpid():
            stale.unlink()
    except (OSError, ValueError):
        pass
    return {"pid": os.getpid()}


def draining_since() -> float | None:
    """On an engine: when it started draining (``time.time()``), or None."""
    return None if _DRAIN is None else _DRAIN.since


# ---------------------------------------------------------------- client side


def drain_records(pool_name: str) -> dict[int, dict[str, Any]]:
    """The drain records the engines of pool ``pool_name`` wrote, by engine id."""
    folder = _runtime.pool_dir(pool_name) / DRAIN_DIR
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    found: dict[int, dict[str, Any]] = {}
    for name in names:
        if name.endswith(".json"):
            try:
                record = json.loads((folder / name).read_text())
                found[int(record["engine_id"])] = record
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return found


def walltime_exit(pool_name: str, engine_ids: tuple[int, ...] | list[int]) -> str | None:
    """How the engines left, when every one of them drained on a signal (else None):
    the supervisor then does not count their exit as a failure."""
    records = drain_records(pool_name)
    if not engine_ids or not all(i in records for i in engine_ids):
        return None
    names = sorted({str(records[i].get("signal")) for i in engine_ids})
    return f"stopped (walltime): drained on {', '.join(names)}"


class WalltimeWatch:
    """One per pool: installs the drain handlers on engines that join and, with
    ``replace_on_walltime``, starts a replacement for each engine set whose engines
    start draining: new engine ids, in a new job, with the pool's setup replayed by
    the engine hooks, while the old job finishes its tasks."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self.replaced: set[tuple[int, int]] = set()  # (engine id, pid) already replaced
        self._thread: threading.Thread | None = None

    def engines_joined(self, core: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: install the drain handlers on ``engine_ids``; with
        ``replace_on_walltime``, watch for draining engines to replace."""
        client = core.live_client()
        folder = str(_runtime.pool_dir(core.name))
        pending = {i: client[i].apply_async(install, folder) for i in engine_ids}
        for engine_id, result in pending.items():
            try:
                result.get(timeout=INSTALL_TIMEOUT)
            except Exception as exc:
                log.warning("pxpool: engine %s will not drain on signals: %r", engine_id, exc)
        if core.profile.batch.replace_on_walltime:
            self.ensure_running()

    def ensure_running(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name=f"pxpool-walltime-{self.core.name}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while self.core.state is PoolState.RUNNING:
            try:
                self.check()
            except Exception:
                log.exception("pxpool: walltime watcher of pool %r", self.core.name)
            time.sleep(WATCH_INTERVAL)

    def check(self) -> None:
        """Start replacements for engine sets whose engines began draining."""
        records = drain_records(self.core.name)
        busy = self.core.operations.snapshot()  # engines pxpool itself restarts or removes
        for ids in list(self.core.engine_sets.values()):
            if any(i in busy for i in ids):
                continue
            draining = [
                (i, int(records[i].get("pid", 0)))
                for i in ids
                if i in records and (i, int(records[i].get("pid", 0))) not in self.replaced
            ]
            if not draining:
                continue
            self.replaced.update((i, int(records[i].get("pid", 0))) for i in ids if i in records)
            log.warning(
                "pxpool: engines %s of pool %r are draining (%s); starting %d replacement(s)",
                ids,
                self.core.name,
                records[draining[0][0]].get("signal"),
                len(ids),
            )
            future = self.core.loop.submit(self.core.add_new_engines(len(ids)))
            future.add_done_callback(self._report)

    def _report(self, future: Any) -> None:
        error = future.exception()
        if error is not None and self.core.state is PoolState.RUNNING:
            log.error("pxpool: replacing draining engines of %r failed: %s", self.core.name, error)
