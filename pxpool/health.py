"""Engine health: one snapshot per engine, as a DataFrame, a summary and a live panel.

``pool.health()`` returns one row per engine id the pool ever started (dead and removed
engines stay, marked) with the columns in :data:`COLUMNS`. The first call of
``health()``, ``health_summary()`` or ``panel()`` on a pool installs a small agent on
every engine (and on engines that join later): a daemon thread that reports CPU, memory
and the running task over its own socket every 0.5 s, without the engine's main thread.
Later calls only read what the agents reported, so they are cheap and never wait for a
busy engine.

States (see :mod:`pxpool._health.collector` for the exact rules):

``starting``
    started, not yet registered with the hub or not yet reporting
``idle`` / ``busy``
    reporting, without / with a running task
``unresponsive``
    3 reports in a row missed (2 s at the default interval), or dropped by the hub
    for missed heartbeats while the process still exists (a SIGSTOP'd engine)
``dead``
    dropped by the hub and its process is gone; ipyparallel's nanny reports a death
    within milliseconds, so a killed engine is ``dead`` well within 5 s
``restarting``
    ``pool.restart(k)`` is replacing it, until the new process reports
``draining``
    told to leave by the scheduler (SIGUSR1/SIGUSR2 before the walltime) or SIGTERM: it
    finishes its task, hands new ones back, then leaves (see :mod:`pxpool._reliability.walltime`)
``stopped (walltime)``
    left the pool after draining; not a failure, so not restarted
``stopped``
    the pool stopped, or ``pool.scale`` removed the engine
``released``
    the pool had no work for ``idle_timeout`` and stopped its engines (their batch jobs
    cancelled); the next use of the pool starts them again (see :mod:`pxpool._reliability.idle`)

``health_summary()`` counts engines per state and adds ``core_hours``: the cores the
pool's engines held (``cores_per_engine``, 1 outside batch profiles) times how long.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import pandas

    from ._health.collector import Collector
    from .panel import Panel
    from .pool import Pool

__all__ = ["COLUMNS", "STATES", "EngineSnapshot", "HealthAccess", "format_health", "health_frame"]

STATES = ("starting", "idle", "busy", "unresponsive", "dead", "restarting", "stopped", "released")
STATES += ("draining", "stopped (walltime)")  # leaving, or left, on a scheduler's signal
COLUMNS = (
    "engine_id",
    "host",
    "pid",
    "job_id",
    "state",
    "task",
    "tasks_done",
    "tasks_failed",
    "cpu_percent",
    "rss_bytes",
    "rss_peak_bytes",
    "mem_limit_bytes",
    "heartbeat_age_s",
    "uptime_s",
    "fingerprint",
)


@dataclass(frozen=True)
class EngineSnapshot:
    """What is known of one engine at one moment; ``None`` where nothing is known yet."""

    engine_id: int
    host: str | None
    pid: int | None
    job_id: str | None
    state: str
    task: str | None  # "label [msg_id prefix]" of the running task
    tasks_done: int
    tasks_failed: int
    cpu_percent: float | None
    rss_bytes: int | None
    rss_peak_bytes: int | None
    mem_limit_bytes: int | None
    heartbeat_age_s: float | None  # seconds since the engine's agent last reported
    uptime_s: float | None
    fingerprint: str | None  # short hash of Python + key package versions
    task_id: str | None = None
    task_label: str | None = None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def health_frame(snapshots: list[EngineSnapshot]) -> pandas.DataFrame:
    """Snapshots as a DataFrame: :data:`COLUMNS` first, then the task's id and label."""
    import pandas

    columns = [*COLUMNS, "task_id", "task_label"]
    frame = pandas.DataFrame([s.as_row() for s in snapshots], columns=columns)
    for name in ("pid", "tasks_done", "tasks_failed", "rss_bytes", "rss_peak_bytes"):
        frame[name] = frame[name].astype("Int64")
    frame["mem_limit_bytes"] = frame["mem_limit_bytes"].astype("Int64")
    return frame


def summarize(snapshots: list[EngineSnapshot]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for snapshot in snapshots:
        counts[snapshot.state] = counts.get(snapshot.state, 0) + 1
    return counts


class HealthAccess:
    """Mixed into :class:`~pxpool.pool.Pool`: ``health()``, ``health_summary()``, ``panel()``."""

    def health(self) -> pandas.DataFrame:
        """One row per engine ever started in this pool, columns :data:`COLUMNS` first."""
        return health_frame(self.health_snapshots())

    def health_summary(self) -> dict[str, float]:
        """How many engines are in each state (every state listed, zeros included), and
        ``core_hours``: core-hours the pool's engines used so far."""
        from ._reliability.idle import core_hours

        counts: dict[str, float] = dict(summarize(self.health_snapshots()))
        counts["core_hours"] = core_hours(cast("Pool", self))
        return counts

    def health_snapshots(self) -> list[EngineSnapshot]:
        """The snapshots behind :meth:`health`, without building a DataFrame."""
        collector = self._health_collector()
        snapshots = [] if collector is None else collector.snapshots()
        if cast("Pool", self).state == "idle":  # released after idle_timeout, not stopped
            snapshots = [
                replace(s, state="released") if s.state == "stopped" else s for s in snapshots
            ]
        return snapshots

    def panel(self, refresh: float = 1.0) -> Panel:
        """A live ipywidgets panel of this pool's engines, refreshed every ``refresh`` s."""
        from .panel import Panel

        self._health_collector()
        return Panel(cast("Pool", self), refresh=refresh)

    def _health_collector(self) -> Collector | None:
        """This pool's collector; created, with agents installed, on first use."""
        from ._health.collector import Collector

        pool = cast("Pool", self)
        collector = cast("Collector | None", pool.__dict__.get("_health"))
        if collector is None:
            if pool.state != "running":
                return None
            collector = pool.__dict__.setdefault("_health", Collector(pool))
            collector.seed(list(range(pool._next_id)))
            pool.add_engine_hook(collector.engines_joined)  # runs now for running engines
            collector.wait_first_reports()
        elif pool.state == "running":
            collector.ensure_running()
        return collector


def format_health(snapshots: list[EngineSnapshot]) -> str:
    """The :data:`COLUMNS` as a plain-text table (``pxpool status``): sizes in MiB,
    times in seconds, ``-`` where nothing is known."""
    from ._health.table import format_table

    def cell(name: str, value: Any) -> str:
        if value is None:
            return "-"
        if name.endswith("_bytes"):
            return f"{value / 2**20:.0f}M"
        if isinstance(value, float):
            return f"{value:.1f}"
        return str(value)

    rows = [{c: cell(c, getattr(s, c)) for c in COLUMNS} for s in snapshots]
    return format_table(rows, list(COLUMNS)) if rows else "(no engines)"
