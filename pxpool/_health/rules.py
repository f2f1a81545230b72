"""The state rules of the health model: what the client knows of each engine, and the
state that follows from it at one moment (see :mod:`pxpool.health` for the states).

Kept apart from the collector's thread and sockets so the rules read as one page:

- ``stopped``: the pool is stopping or stopped, or the engine is being removed
  (``scale``, an idle release, a panel's stop) or was removed;
- ``restarting``: a restart is replacing it, until the new process reports;
- ``starting``: started by the pool, not yet registered or not yet reporting;
- ``dead``: the hub dropped it (the nanny reports a death within milliseconds) and
  its process is gone;
- ``unresponsive``: its agent missed reports, or the hub dropped it for missed
  heartbeats while its process still exists (e.g. SIGSTOP);
- ``busy`` / ``idle``: registered and reporting, with or without a running task;
- ``draining`` / ``stopped (walltime)``: told to leave by a scheduler's signal.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from .._core.state import OperationKind
from ..health import EngineState

INSTALL_BUSY_AFTER = 1.0  # an install not answered by then: the engine is busy
THIS_HOST = socket.gethostname()


@dataclass
class EngineRecord:
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


@dataclass(frozen=True)
class Moment:
    """What the pool says at the moment states are derived."""

    running: bool
    now: float
    report_limit: float  # seconds without a report after which an engine is unresponsive
    registered: set[int] = field(default_factory=set)
    owned: set[int] = field(default_factory=set)
    operations: dict[int, OperationKind] = field(default_factory=dict)


def engine_state(record: EngineRecord, moment: Moment) -> EngineState:
    """The state of ``record``'s engine at ``moment`` (without the drain rules)."""
    engine_id = record.engine_id
    if not moment.running or moment.operations.get(engine_id) is OperationKind.REMOVE:
        return EngineState.STOPPED
    if record.restarting:
        return EngineState.RESTARTING
    if engine_id in moment.registered:
        return _registered_state(record, moment)
    if engine_id not in moment.owned:
        return EngineState.STOPPED
    if not record.registered_once:
        return EngineState.STARTING
    if record.left_at is not None and record.received > record.left_at:
        return EngineState.UNRESPONSIVE  # dropped by the hub, but its agent still reports
    return EngineState.UNRESPONSIVE if process_alive(record.report) else EngineState.DEAD


def _registered_state(record: EngineRecord, moment: Moment) -> EngineState:
    if record.report is None:
        pending_for = moment.now - record.install_sent if record.install is not None else 0.0
        return EngineState.BUSY if pending_for > INSTALL_BUSY_AFTER else EngineState.STARTING
    if moment.now - record.received > moment.report_limit:
        return EngineState.UNRESPONSIVE
    return EngineState.BUSY if record.report.get("task") else EngineState.IDLE


def drain_state(
    record: EngineRecord, drain: dict[str, Any] | None, registered: set[int]
) -> EngineState | None:
    """``draining`` or ``stopped (walltime)`` for an engine that was told to leave by a
    signal (its agent says so, or its drain record, unless a later process under the
    same id reported since); None otherwise."""
    report = record.report or {}
    if record.engine_id in registered and report.get("draining"):
        return EngineState.DRAINING
    if drain is None or (report and report.get("pid") != drain.get("pid")):
        return None
    if record.engine_id in registered:
        return EngineState.DRAINING
    if drain.get("state") == "draining" and process_alive(record.report):
        return EngineState.DRAINING
    return EngineState.STOPPED_WALLTIME


def process_alive(report: dict[str, Any] | None) -> bool:
    """True when the engine's process still exists on this host (SIGSTOP'd, say)."""
    if report is None or report.get("host") != THIS_HOST:
        return False
    import psutil

    try:
        process = psutil.Process(int(report["pid"]))
        if abs(process.create_time() - float(report["create_time"])) > 1.0:
            return False  # the pid was reused
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
