"""The panel's widget state (trait values) for a pool with busy, idle and dead engines."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython

import pxpool
import pxpool.pool
from pxpool.panel import STATE_COLOURS, Panel

from .waits import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=3) as running:
        yield running


def badge(panel: Panel, engine_id: int) -> str:
    return str(panel.rows[engine_id].state.value)


def test_rows_show_busy_idle_and_dead_engines_and_the_header_counts_them(
    pool: pxpool.Pool,
) -> None:
    panel = pool.panel(refresh=0.2)
    try:
        assert "pxpool-panel" in panel.get_state()["_dom_classes"]
        assert sorted(panel.rows) == [0, 1, 2]
        wait_until(
            lambda: all(">idle<" in badge(panel, i) for i in range(3)),
            5,
            "every row showing idle",
            tolerate_errors=False,
        )
        pids = pool.view().apply_sync(os.getpid)
        pool.view(2).execute("print('engine 2 before its SIGKILL')")
        running = pool.client[0].apply_async(time.sleep, 20)
        os.kill(pids[2], signal.SIGKILL)
        wait_until(
            lambda: ">busy<" in badge(panel, 0) and ">dead<" in badge(panel, 2),
            5,
            "engine 0 shown busy and engine 2 dead",
            tolerate_errors=False,
        )

        busy, idle, dead = (panel.rows[i] for i in range(3))
        assert {"pxpool-row", "pxpool-row-0"} <= set(busy.get_state()["_dom_classes"])
        assert {"pxpool-state", "pxpool-state-busy"} <= set(busy.state.get_state()["_dom_classes"])
        assert "pxpool-state-idle" not in busy.state.get_state()["_dom_classes"]
        assert STATE_COLOURS["busy"] in busy.state.value
        assert busy.task.value.startswith("sleep [")
        assert panel.rows[0].state.value.startswith("<b>0</b>")
        assert ">idle<" in badge(panel, 1) and idle.task.value == ""
        rss = pool.health().set_index("engine_id").loc[1, "rss_bytes"]
        assert idle.memory.value == pytest.approx(rss / panel.memory_scale, abs=0.02)
        memory, heartbeat = idle.meta.value.split(" &middot; ")
        assert memory.endswith(" MiB") and float(heartbeat.rstrip("s")) < 2.0
        assert "pxpool-state-dead" in dead.state.get_state()["_dom_classes"]
        assert dead.cpu.value == 0.0
        assert [b.disabled for b in dead.buttons] == [True, False, True]  # restart stays
        assert "busy</span> 1" in panel.counts.value
        assert "idle</span> 1" in panel.counts.value
        assert "dead</span> 1" in panel.counts.value
        assert "tasks done <b>" in panel.totals.value and "tasks/s" in panel.totals.value

        pool.client.send_signal("SIGINT", targets=[0], block=True)  # end the sleep
        with pytest.raises(Exception, match="KeyboardInterrupt"):
            running.get(timeout=10)
    finally:
        panel.close()


def test_paused_panel_keeps_its_values_and_actions_report_errors_in_the_panel(
    pool: pxpool.Pool,
) -> None:
    panel = pool.panel(refresh=0.1)
    try:
        panel.auto.value = False
        time.sleep(0.3)  # a refresh in progress may still finish
        before = panel.rows[1].meta.value
        time.sleep(0.5)
        assert panel.rows[1].meta.value == before
        panel.auto.value = True
        wait_until(
            lambda: panel.rows[1].meta.value != before,
            3,
            "a refresh of engine 1's row after resuming",
            tolerate_errors=False,
        )

        # engine 2 is dead (its interrupt button is disabled; the action still runs
        # when asked): the error shows in the panel; its log button shows what it
        # printed before it died, and how it died
        next(b for b in panel.rows[2].buttons if b.description == "interrupt").click()
        panel.rows[2].log_button.click()
        wait_until(
            lambda: "failed" in panel.error.value and "SIGKILL" in panel.log_view.value,
            10,
            "the failed interrupt reported and the dead engine's log shown in the panel",
            tolerate_errors=False,
        )
        assert "interrupt engine 2 failed" in panel.error.value
        assert "engine 2 before its SIGKILL\n" in panel.log_view.value
        assert "(the process ended: killed by SIGKILL)" in panel.log_view.value
    finally:
        panel.close()


def test_restart_button_brings_a_dead_engine_back_and_stop_pool_ends_refreshing(
    pool: pxpool.Pool,
) -> None:
    panel = pool.panel(refresh=0.2)
    restart = panel.rows[2].buttons[1]
    restart.click()
    wait_until(
        lambda: ">idle<" in badge(panel, 2),
        30,
        "engine 2 idle again after the restart button",
        tolerate_errors=False,
    )
    assert panel.error.value == ""
    panel.stop_button.click()
    wait_until(
        lambda: pool.state == "stopped",
        30,
        "the pool stopped by the stop button",
        tolerate_errors=False,
    )
    wait_until(
        lambda: not panel.refreshing,
        5,
        "the panel's refresh thread ending",
        tolerate_errors=False,
    )
    assert all(">stopped<" in badge(panel, i) for i in range(3))


def test_pxhealth_shows_the_panel_of_the_current_pool() -> None:
    shell: InteractiveShell = start_ipython() or InteractiveShell.instance()
    shell.run_line_magic("load_ext", "pxpool")
    try:
        with pytest.raises(UsageError, match="--refresh must be >= 0"):
            shell.run_line_magic("pxhealth", "--refresh -1")
        with pxpool.Pool.from_profile("local", engines=1) as pool:
            panel = shell.run_line_magic("pxhealth", "--refresh 0")
            assert isinstance(panel, Panel) and panel.pool is pool
            assert ">idle<" in badge(panel, 0)
        with pytest.raises(UsageError, match="No running pool"):
            shell.run_line_magic("pxhealth", "")
    finally:
        shell.run_line_magic("unload_ext", "pxpool")
