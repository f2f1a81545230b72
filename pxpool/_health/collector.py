"""Client side of the health model: one collector thread per pool.

The collector subscribes to every engine's agent (:mod:`pxpool._health.agent`), keeps
the latest report per engine id, and notes which ids the hub has registered. States are
derived when asked (:meth:`Collector.snapshots`) from what is known at that moment, by
the rules in :mod:`pxpool._health.rules`; restarts and removals in flight come from the
pool's record of its engine operations (:class:`pxpool._core.state.Operations`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .._core.state import PoolState
from .._reliability.walltime import drain_records
from ..engines import reach_url
from ..health import EngineSnapshot, EngineState
from . import agent as _health_agent
from .rules import EngineRecord, Moment, drain_state, engine_state

if TYPE_CHECKING:
    from .._core.core import PoolCore

log = logging.getLogger("pxpool.health")
REPORT_INTERVAL = 0.5  # seconds between an agent's reports
MISSED_REPORTS = 3  # unresponsive after this many reports in a row did not arrive
POLL_SECONDS = 0.1
FIRST_REPORT_WAIT = 3.0
RESTART_GONE_AFTER = 1.0  # a restart no longer seen for this long has ended
_WITH_TASK = frozenset(
    {EngineState.BUSY, EngineState.UNRESPONSIVE, EngineState.DEAD, EngineState.DRAINING}
)


class Collector:
    """Receives agent reports for one pool in a daemon thread; stops with the pool."""

    def __init__(self, pool: PoolCore, interval: float = REPORT_INTERVAL) -> None:
        self.pool = pool
        self.interval = interval
        self.lock = threading.Lock()
        self.records: dict[int, EngineRecord] = {}
        self._connects: list[tuple[str | None, str]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------ engine hook

    def engines_joined(self, pool: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: install the agent on ``engine_ids`` without waiting for it."""
        client = pool.live_client()
        controller_ip = pool.controller_ip()
        now = time.time()
        tokens = pool.restarts_in_flight()
        for engine_id in engine_ids:
            result = client[engine_id].apply_async(
                _health_agent.install, controller_ip, self.interval
            )
            with self.lock:
                record = self.records.setdefault(engine_id, EngineRecord(engine_id))
                record.install, record.install_sent = result, now
                if record.report is not None and pool.state is PoolState.RUNNING:
                    # a new process under a known id: pool.restart's or a replacement's
                    self._mark_restarting(record, tokens.get(engine_id))
        self.ensure_running()

    def seed(self, engine_ids: list[int]) -> None:
        """Engines started before this collector: those not registered now are gone."""
        with self.lock:
            for engine_id in engine_ids:
                self.records.setdefault(engine_id, EngineRecord(engine_id)).registered_once = True

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
            while not self._stop.is_set() and self.pool.state is PoolState.RUNNING:
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
        tokens = self.pool.restarts_in_flight()
        with self.lock:
            for engine_id in registered:
                record = self.records.setdefault(engine_id, EngineRecord(engine_id))
                record.registered_once = True
                record.left_at = None
            for record in self.records.values():
                if record.engine_id not in registered and record.left_at is None:
                    record.left_at = now
                if record.engine_id in tokens:
                    self._mark_restarting(record, tokens[record.engine_id])

    def _mark_restarting(self, record: EngineRecord, token: object = None) -> None:
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
        return self.pool.registered_ids()

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
                int(report["engine_id"]), EngineRecord(int(report["engine_id"]))
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
        moment = self._moment()
        drains = drain_records(self.pool.name) if moment.running else {}
        restarts = self.pool.restarts_in_flight() if moment.running else {}
        with self.lock:
            for engine_id in moment.registered | moment.owned:
                self.records.setdefault(engine_id, EngineRecord(engine_id))
            rows = []
            for record in sorted(self.records.values(), key=lambda r: r.engine_id):
                self._follow_restart(record, restarts.get(record.engine_id), moment)
                state = engine_state(record, moment)
                if state not in (EngineState.STOPPED, EngineState.RESTARTING):
                    # pxpool's own stops say so; otherwise a scheduler's signal may
                    drain = drains.get(record.engine_id)
                    state = drain_state(record, drain, moment.registered) or state
                rows.append(self._snapshot(record, state, moment.now))
        return rows

    def _moment(self) -> Moment:
        pool = self.pool
        running = pool.state is PoolState.RUNNING
        limit = (MISSED_REPORTS + 1) * self.interval
        if not running:
            return Moment(False, time.time(), limit)
        operations = {i: op.kind for i, op in pool.operations.snapshot().items()}
        return Moment(
            True, time.time(), limit, set(self._registered()), pool.owner_ids(), operations
        )

    def _follow_restart(self, record: EngineRecord, restart: object, moment: Moment) -> None:
        """Mark ``record`` restarting while a restart acts on it; a restart no longer
        seen for RESTART_GONE_AFTER that did not bring the engine back has ended."""
        if restart is not None:
            self._mark_restarting(record, restart)
        elif (
            record.restarting
            and record.engine_id not in moment.registered
            and moment.now - record.restart_seen > RESTART_GONE_AFTER
        ):
            record.restarting = False

    def _snapshot(self, record: EngineRecord, state: EngineState, now: float) -> EngineSnapshot:
        report = record.report or {}
        task = report.get("task") if state in _WITH_TASK else None
        gone = state.gone
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
            + (1 if state is EngineState.DEAD and report.get("task") else 0),
            cpu_percent=0.0 if gone else report.get("cpu_percent"),
            rss_bytes=report.get("rss_bytes"),
            rss_peak_bytes=report.get("rss_peak_bytes"),
            pss_bytes=report.get("pss_bytes"),
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
