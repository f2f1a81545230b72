"""A pool's health, as ``Pool`` shows it: snapshots, the DataFrame and the summary.

The collector (:mod:`pxpool._health.collector`) is made on first use, so a pool
whose health is never asked for runs no agents: the first ``health()``,
``health_summary()`` or ``panel()`` installs the agent on every engine (and, as an
engine hook, on engines that join later) and waits briefly for first reports.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from .._core.state import PoolState
from ..health import EngineSnapshot, EngineState, health_frame, summarize
from .collector import Collector
from .memory import memory_frame

if TYPE_CHECKING:
    import pandas

    from .._core.core import PoolCore
    from .._reliability.idle import IdleWatch


class HealthView:
    """One per pool; ``idle`` counts the core-hours for the summary."""

    def __init__(self, core: PoolCore, idle: IdleWatch) -> None:
        self.core = core
        self.idle = idle
        self._collector: Collector | None = None
        self._lock = threading.Lock()

    def snapshots(self) -> list[EngineSnapshot]:
        """One snapshot per engine id the pool ever started; engines released after
        idle_timeout show as ``released``, not ``stopped``."""
        collector = self._running_collector()
        snapshots = [] if collector is None else collector.snapshots()
        if self.core.state is PoolState.IDLE:
            snapshots = [
                replace(s, state=EngineState.RELEASED) if s.state == EngineState.STOPPED else s
                for s in snapshots
            ]
        return snapshots

    def frame(self) -> pandas.DataFrame:
        return health_frame(self.snapshots())

    def memory(self) -> pandas.DataFrame:
        """See :mod:`pxpool._health.memory`."""
        return memory_frame(self.core.name, self.snapshots())

    def summary(self) -> dict[str, float]:
        """Engines per state (every state listed, zeros included) and ``core_hours``."""
        counts: dict[str, float] = dict(summarize(self.snapshots()))
        counts["core_hours"] = self.idle.core_hours()
        return counts

    def close(self) -> None:
        """The pool stopped: end the collector's thread (bounded)."""
        if self._collector is not None:
            self._collector.close()

    def _running_collector(self) -> Collector | None:
        """The collector; created, with agents installed, on first use while running."""
        with self._lock:
            collector = self._collector
            created = collector is None and self.core.state is PoolState.RUNNING
            if created:
                collector = self._collector = Collector(self.core)
                collector.seed(list(range(self.core.next_id)))
        if collector is None:
            return None
        if created:
            self.core.add_engine_hook(collector.engines_joined)  # runs now for running engines
            collector.wait_first_reports()
        elif self.core.state is PoolState.RUNNING:
            collector.ensure_running()
        return collector
