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

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

__all__ = [
    "COLUMNS",
    "STATES",
    "EngineSnapshot",
    "EngineState",
    "format_health",
    "format_table",
    "health_frame",
    "summarize",
]


class EngineState(StrEnum):
    """An engine's state in ``pool.health()`` (see the module docstring); each
    compares equal to its text, so ``row.state == "busy"`` works."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    UNRESPONSIVE = "unresponsive"
    DEAD = "dead"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    RELEASED = "released"
    DRAINING = "draining"  # leaving on a scheduler's signal
    STOPPED_WALLTIME = "stopped (walltime)"  # left on a scheduler's signal

    @property
    def gone(self) -> bool:
        """No process of this engine runs (or it is being replaced)."""
        return self in _GONE


_GONE = frozenset(
    {EngineState.DEAD, EngineState.STOPPED, EngineState.RESTARTING, EngineState.STOPPED_WALLTIME}
)
STATES = tuple(str(state) for state in EngineState)
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
    "pss_bytes",
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
    state: EngineState
    task: str | None  # "label [msg_id prefix]" of the running task
    tasks_done: int
    tasks_failed: int
    cpu_percent: float | None
    rss_bytes: int | None
    rss_peak_bytes: int | None
    # proportional set size: pages shared with other processes counted in part, so the
    # engines' sum is what they really cost (RSS counts shared pages in full, per engine)
    pss_bytes: int | None
    mem_limit_bytes: int | None
    heartbeat_age_s: float | None  # seconds since the engine's agent last reported
    uptime_s: float | None
    fingerprint: str | None  # short hash of Python + key package versions
    task_id: str | None = None
    task_label: str | None = None

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["state"] = str(self.state)  # plain text in tables and DataFrames
        return row


def health_frame(snapshots: list[EngineSnapshot]) -> pandas.DataFrame:
    """Snapshots as a DataFrame: :data:`COLUMNS` first, then the task's id and label."""
    import pandas

    columns = [*COLUMNS, "task_id", "task_label"]
    frame = pandas.DataFrame([s.as_row() for s in snapshots], columns=columns)
    for name in ("pid", "tasks_done", "tasks_failed", "rss_bytes", "rss_peak_bytes", "pss_bytes"):
        frame[name] = frame[name].astype("Int64")
    frame["mem_limit_bytes"] = frame["mem_limit_bytes"].astype("Int64")
    return frame


def summarize(snapshots: list[EngineSnapshot]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for snapshot in snapshots:
        counts[snapshot.state] = counts.get(snapshot.state, 0) + 1
    return counts


def format_health(snapshots: list[EngineSnapshot]) -> str:
    """The :data:`COLUMNS` as a plain-text table (``pxpool status``): sizes in MiB,
    times in seconds, ``-`` where nothing is known."""

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


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Plain-text table with a header, columns as wide as their widest cell."""
    if not rows:
        return "(no engines)"
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
