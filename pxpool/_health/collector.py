"""Client side of the health model: one collector thread per pool, and the state rules.

The collector subscribes to every engine's agent (:mod:`pxpool._health.agent`), keeps
the latest report per engine id, and notes which ids the hub has registered. States are
derived when asked (:meth:`Collector.snapshots`), from what is known at that moment:

- ``stopped``: the pool is stopping or stopped, or the engine was removed by ``scale``;
- ``restarting``: ``pool.restart`` is replacing it, until the new process reports;
- ``starting``: started by the pool, not yet registered or not yet reporting;
- ``dead``: the hub dropped it (ipyparallel's nanny reports a death within
  milliseconds) and its process is gone;
- ``unresponsive``: its agent missed ``MISSED_REPORTS`` reports in a row, or the hub
  dropped it for missed heartbeats while its process still exists (e.g. SIGSTOP);
- ``busy`` / ``idle``: registered and reporting, with or without a running task;
- ``draining``: told to leave (a walltime or preemption signal, see
  :mod:`pxpool._reliability.walltime`), still registered or still finishing; then
  ``stopped (walltime)`` once it left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._reliability.walltime import drain_records
from ..engines._ssh_reach import reach_url
from ..health import EngineSnapshot
from . import agent as _health_agent

if TYPE_CHECKING:
    from ..pool import Pool

log = logging.getLogger("pxpool.health")
REPORT_INTERVAL = 0.5  # seconds between an agent's reports
MISSED_REPORTS = 3  # unresponsive after this many reports in a row did not arrive
POLL_SECONDS = 0.1
INSTALL_BUSY_AFTER = 1.0  # an install not answered by then: the engine is busy
FIRST_REPORT_WAIT = 3.0
RESTART_GONE_AFTER = 1.0  # a restart no longer seen for this long has ended
_THIS_HOST = socket.gethostname()


@dataclass
class _Record:
    """What the client knows of one engine id, across restarts of its process."""

    engine_id: int
    report: dict[str, Any] | None = None
    received: float = 0.0  # time.time() of the last report
    registered_once: bool = False
    install: Any = None  # AsyncResult of the pending install
    install_sent: float = 0.0
    address: str | None = None
    base_done: int = 0  # counts of earlier processes under this id
    base_failed: int = 0
    restarting: bool = False
    restart_from: int | None = None  # pid of the process a restart replaces
    left_at: float | None = None  # time.time() the hub dropped it
    restart_seen: float = 0.0  # time.time() a restart of it was last seen running
    restart_token: object = None  # the restart operation that set restart_from


class Collector:
    """Receives agent reports for one pool in a daemon thread; stops with the pool."""

    def __init__(self, pool: Pool, interval: float = REPORT_INTERVAL) -> None:
        self.pool = pool
        self.interval = interval
        self.lock = threading.Lock()
        self.records: dict[int, _Record] = {}
        self._connects: list[tuple[str | None, str]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------ engine hook

    def engines_joined(self, pool: Pool, engine_ids: list[int]) -> None:
        """Engine hook: install the agent on ``engine_ids`` without waiting for it."""
        client = pool.client
        controller_ip = client._config["interface"].split("://", 1)[-1]
        now = time.time()
        tokens = restart_tokens(pool)
        for engine_id in engine_ids:
            result = client[engine_id].apply_async(
                _health_agent.install, controller_ip, self.interval
            )
            with self.lock:
                record = self.records.setdefault(engine_id, _Record(engine_id))
                record.install, record.install_sent = result, now
                if record.report is not None and pool.state == "running":
                    # a new process under a known id: pool.restart's or a replacement's
                    self._mark_restarting(record, tokens.get(engine_id))
        self.ensure_running()

    def seed(self, engine_ids: list[int]) -> None:
        """Engines started before this collector: those not registered now are gone."""
        with self.lock:
            for engine_id in engine_ids:
                self.records.setdefault(engine_id, _Record(engine_id)).registered_once = True

    def ensure_running(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"pxpool-health-{self.pool.name}", daemon=True
            )
            self._thread.start()

    def wait_first_reports(self, timeout: float = FIRST_REPORT_WAIT) -> None:
        """Wait (bounded) until every registered engine with an install reported once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = set(self._registered())
            with self.lock:
                waiting = [
                    r for r in self.records.values() if r.engine_id in ids and r.report is None
                ]
            if not waiting:
                return
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    # ------------------------------------------------------------ thread

    def _run(self) -> None:
        import zmq

        sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)  # this thread only
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            while not self._stop.is_set() and self.pool.state == "running":
                try:
                    self._check_installs()
                    with self.lock:
                        connects, self._connects = self._connects, []
                    for old, new in connects:
                        if old is not None:
                            try:
                                sub.disconnect(old)
                            except zmq.ZMQError:
                                pass
                        sub.connect(new)
                    while sub.poll(int(POLL_SECONDS * 1000), zmq.POLLIN):
                        self._receive(json.loads(sub.recv()))
                        if not sub.poll(0, zmq.POLLIN):
                            break
                    self._note_registrations(set(self._registered()))
                except Exception:
                    log.exception("pxpool: health collector for pool %r", self.pool.name)
                    time.sleep(POLL_SECONDS)
        finally:
            sub.close(linger=0)

    def _note_registrations(self, registered: set[int]) -> None:
        now = time.time()
        tokens = restart_tokens(self.pool)
        with self.lock:
            for engine_id in registered:
                record = self.records.setdefault(engine_id, _Record(engine_id))
                record.registered_once = True
                record.left_at = None
            for record in self.records.values():
                if record.engine_id not in registered and record.left_at is None:
                    record.left_at = now
                if record.engine_id in tokens:
                    self._mark_restarting(record, tokens[record.engine_id])

    def _mark_restarting(self, record: _Record, token: object = None) -> None:
        """``record`` is being replaced until a process other than the one reporting
        when the restart ``token`` was first seen reports. The same restart seen again
        after the new process reported (its hooks still running) does not re-arm it:
        that would wait for yet another process (``token=None``: a fresh restart)."""
        record.restart_seen = time.time()
        if token is not None and token is record.restart_token:
            return
        record.restart_token = token if token is not None else object()
        record.restarting = True
        record.restart_from = (record.report or {}).get("pid")

    def _registered(self) -> list[int]:
        client = self.pool._client
        return list(client.ids) if client is not None and self.pool.state == "running" else []

    def _check_installs(self) -> None:
        with self.lock:
            pending = [r for r in self.records.values() if r.install is not None]
        for record in pending:
            result = record.install
            if not result.ready():
                continue
            try:
                answer = result.get(0)
                answer["address"] = reach_url(self.pool, record.engine_id, answer["address"])
            except Exception as exc:
                log.warning(
                    "pxpool: health agent on engine %s did not start: %r", record.engine_id, exc
                )
                answer = None
            with self.lock:
                record.install = None
                if answer is not None and answer["address"] != record.address:
                    self._connects.append((record.address, answer["address"]))
                    record.address = answer["address"]

    def _receive(self, report: dict[str, Any]) -> None:
        with self.lock:
            record = self.records.setdefault(
                int(report["engine_id"]), _Record(int(report["engine_id"]))
            )
            old = record.report
            if old is not None and (old["pid"], old["host"]) != (report["pid"], report["host"]):
                record.base_done += int(old["tasks_done"])
                record.base_failed += int(old["tasks_failed"]) + (1 if old.get("task") else 0)
            record.report = report
            record.received = time.time()
            record.registered_once = True
            if record.restarting and report["pid"] != record.restart_from:
                record.restarting = False

    # ------------------------------------------------------------ states

    def snapshots(self) -> list[EngineSnapshot]:
        """One snapshot per engine id this pool ever started, in id order."""
        pool = self.pool
        running = pool.state == "running"
        registered = set(self._registered()) if running else set()
        owned = pool._owner_ids() if running else set()
        found = _operations(pool) if running else {}
        operations = {engine_id: kind for engine_id, (kind, _) in found.items()}
        drains = drain_records(pool.name) if running else {}
        now = time.time()
        limit = (MISSED_REPORTS + 1) * self.interval
        with self.lock:
            for engine_id in set(registered) | owned:
                self.records.setdefault(engine_id, _Record(engine_id))
            records = sorted(self.records.values(), key=lambda r: r.engine_id)
            rows = []
            for record in records:
                operation = operations.get(record.engine_id)
                if operation == "restarting":
                    self._mark_restarting(record, found[record.engine_id][1])
                elif (
                    record.restarting
                    and record.engine_id not in registered
                    and now - record.restart_seen > RESTART_GONE_AFTER
                ):
                    record.restarting = False  # the restart is over and did not bring it back
                state = self._state(record, running, registered, owned, operation, now, limit)
                if state not in ("stopped", "restarting"):  # pxpool's own stops say so
                    state = _drain_state(record, drains.get(record.engine_id), registered) or state
                rows.append(self._snapshot(record, state, now))
        return rows

    def _state(
        self,
        record: _Record,
        running: bool,
        registered: set[int],
        owned: set[int],
        operation: str | None,
        now: float,
        limit: float,
    ) -> str:
        if not running or operation == "stopped":
            return "stopped"
        if record.restarting:
            return "restarting"
        age = now - record.received if record.report is not None else None
        if record.engine_id in registered:
            if record.report is None:
                pending_for = now - record.install_sent if record.install is not None else 0.0
                return "busy" if pending_for > INSTALL_BUSY_AFTER else "starting"
            if age is not None and age > limit:
                return "unresponsive"
            return "busy" if record.report.get("task") else "idle"
        if record.engine_id not in owned:
            return "stopped"
        if not record.registered_once:
            return "starting"
        if record.left_at is not None and record.received > record.left_at:
            return "unresponsive"  # dropped by the hub, but its agent still reports
        return "unresponsive" if _process_alive(record.report) else "dead"

    def _snapshot(self, record: _Record, state: str, now: float) -> EngineSnapshot:
        report = record.report or {}
        task = report.get("task") if state in ("busy", "unresponsive", "dead", "draining") else None
        gone = state in ("dead", "stopped", "restarting", "stopped (walltime)")
        age = now - record.received if record.report is not None else None
        uptime = None
        if record.report is not None:
            uptime = report["time"] - report["create_time"] + (0.0 if gone else max(age or 0, 0))
        return EngineSnapshot(
            engine_id=record.engine_id,
            host=report.get("host"),
            pid=report.get("pid"),
            job_id=self._job_id(record.engine_id),
            state=state,
            task=f"{task['label']} [{task['id'][:8]}]" if task else None,
            tasks_done=record.base_done + int(report.get("tasks_done", 0)),
            tasks_failed=record.base_failed
            + int(report.get("tasks_failed", 0))
            + (1 if state == "dead" and report.get("task") else 0),
            cpu_percent=0.0 if gone else report.get("cpu_percent"),
            rss_bytes=report.get("rss_bytes"),
            rss_peak_bytes=report.get("rss_peak_bytes"),
            mem_limit_bytes=report.get("mem_limit_bytes"),
            heartbeat_age_s=age,
            uptime_s=uptime,
            fingerprint=report.get("fingerprint"),
            task_id=task["id"] if task else None,
            task_label=task["label"] if task else None,
        )

    def _job_id(self, engine_id: int) -> str | None:
        try:
            return self.pool.provider.job_id_of(engine_id)
        except Exception:
            return None


def _drain_state(record: _Record, drain: dict[str, Any] | None, registered: set[int]) -> str | None:
    """``draining`` or ``stopped (walltime)`` for an engine that was told to leave by a
    signal (its agent says so, or its drain record, unless a later process under the
    same id reported since); None otherwise."""
    report = record.report or {}
    if record.engine_id in registered and report.get("draining"):
        return "draining"
    if drain is None or (report and report.get("pid") != drain.get("pid")):
        return None
    if record.engine_id in registered:
        return "draining"
    if drain.get("state") == "draining" and _process_alive(record.report):
        return "draining"
    return "stopped (walltime)"


def _process_alive(report: dict[str, Any] | None) -> bool:
    """True when the engine's process still exists on this host (SIGSTOP'd, say)."""
    if report is None or report.get("host") != _THIS_HOST:
        return False
    import psutil

    try:
        process = psutil.Process(int(report["pid"]))
        if abs(process.create_time() - float(report["create_time"])) > 1.0:
            return False  # the pid was reused
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pending_operations(pool: Pool) -> dict[int, str]:
    """Engines a restart or scale of ``pool`` is replacing or removing right now."""
    return {engine_id: kind for engine_id, (kind, _) in _operations(pool).items()}


def restart_tokens(pool: Pool) -> dict[int, object]:
    """Engines ``pool.restart`` is replacing right now, each with the task doing it: one
    restart is told from the next by its task."""
    return {i: task for i, (kind, task) in _operations(pool).items() if kind == "restarting"}


def _operations(pool: Pool) -> dict[int, tuple[str, object]]:
    """Pool coroutines run on the pool's loop thread; their locals say which engines they
    act on (``_restart``: ``together`` or ``engine_id``; ``_scale``: ``have[n:]``)."""
    loop = getattr(pool._loop_thread, "loop", None)
    if loop is None:
        return {}
    found: dict[int, tuple[str, object]] = {}
    tasks: set[asyncio.Task[Any]] = set()
    for _ in range(3):  # the loop thread may change its task set while we copy it
        try:
            tasks = asyncio.all_tasks(loop)
            break
        except RuntimeError:
            continue
    for task in tasks:
        coro: Any = task.get_coro()
        for _ in range(8):  # restart_sync -> restart -> _restart: a short await chain
            code = getattr(coro, "cr_code", None)
            frame = getattr(coro, "cr_frame", None)
            if code is None or frame is None:
                break
            local = frame.f_locals
            if code.co_name == "_restart":
                for engine_id in local.get("together") or [local.get("engine_id")]:
                    if isinstance(engine_id, int):
                        found[engine_id] = ("restarting", task)
            elif code.co_name == "_scale" and isinstance(local.get("have"), list):
                for engine_id in local["have"][local.get("n", len(local["have"])) :]:
                    found.setdefault(engine_id, ("stopped", task))
            coro = getattr(coro, "cr_await", None)
    return found
