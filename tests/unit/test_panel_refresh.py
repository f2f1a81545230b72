"""The panel's refresh thread against a pool stand-in whose stop begins mid-refresh.

The stand-in is the panel's own seam (``PanelPool``); the real pool's rows in the
browser are covered by ``tests/integration/test_panel_browser.py``.
"""

from __future__ import annotations

import threading
from typing import Any

from pxpool.health import EngineSnapshot, EngineState
from pxpool.panel import Panel


def snapshot(state: EngineState) -> EngineSnapshot:
    return EngineSnapshot(
        engine_id=0,
        host="h",
        pid=1,
        job_id=None,
        state=state,
        task="sleep" if state is EngineState.BUSY else None,
        tasks_done=0,
        tasks_failed=0,
        cpu_percent=None,
        rss_bytes=None,
        rss_peak_bytes=None,
        pss_bytes=None,
        mem_limit_bytes=None,
        heartbeat_age_s=None,
        uptime_s=None,
        fingerprint=None,
    )


class StopsDuringARefresh:
    """A running pool with one busy engine whose stop begins while the panel's second
    refresh reads the snapshots (after they were taken, as a real stop may)."""

    name = "stand-in"
    client: Any = None
    engines = 1
    adapt_decisions: list[Any] = []

    def __init__(self) -> None:
        self.state = "running"
        self.reads = 0
        self.read_while_stopping = threading.Event()

    def health_snapshots(self) -> list[EngineSnapshot]:
        self.reads += 1
        if self.state != "running":
            self.read_while_stopping.set()
            return [snapshot(EngineState.STOPPED)]
        if self.reads == 2:
            self.state = "stopping"  # the stop begins after this read's snapshots
        return [snapshot(EngineState.BUSY)]

    def core_hours(self) -> float:
        return 0.0


def test_a_stop_that_begins_during_a_refresh_still_shows_the_rows_stopped() -> None:
    pool = StopsDuringARefresh()
    panel = Panel(pool, refresh=0.01)  # type: ignore[arg-type]  # the stand-in above
    try:
        assert ">busy<" in panel.rows[0].state.value  # the first refresh, in __init__
        assert pool.read_while_stopping.wait(10), "no refresh after the stop began"
        for thread in threading.enumerate():
            if thread.name == f"pxpool-panel-{pool.name}":
                thread.join(10)
        assert not panel.refreshing, "the refresh thread did not end after the stop"
        assert ">stopped<" in panel.rows[0].state.value
        assert pool.reads == 3  # the thread ended after the refresh that showed the stop
    finally:
        panel.close()
