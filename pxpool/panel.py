"""A live ipywidgets panel of a pool's engines: ``pool.panel()`` or ``%pxhealth``.

The panel is a ``VBox``: a header (counts per state, tasks done and failed, a sparkline
of tasks finished per second, core-hours used), controls (auto-refresh toggle, add N
engines, stop the pool, an error line) and one row per engine (state badge, task, CPU
and memory bars, heartbeat age, interrupt / restart / stop buttons, and a log button that
shows what the engine printed under the table, also once it died). A daemon thread
refreshes it every ``refresh`` seconds from :meth:`Pool.health_snapshots`, which only
reads what the engine agents reported, so the kernel is never blocked; it stops once the
pool stops.

Refreshes set a widget trait only when its value changed, so a refresh of a large,
quiet pool sends few messages. Widgets carry stable CSS classes (``pxpool-panel``,
``pxpool-row-<id>``, ``pxpool-state``, ``pxpool-state-<state>``, ``pxpool-error``,
``pxpool-log``) for styling and for tests that look at the page.
"""

from __future__ import annotations

import collections
import html
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import ipywidgets as widgets
from ipywidgets.widgets.widget_float import ProgressStyle
from ipywidgets.widgets.widget_string import HTMLStyle

from ._dashboard.widget import Dashboard, panel_widgets
from .health import STATES, EngineSnapshot, summarize


class PanelPool(Protocol):
    """What a panel uses of a pool (:class:`pxpool.Pool` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def client(self) -> Any: ...
    @property
    def engines(self) -> int: ...
    def health_snapshots(self) -> list[EngineSnapshot]: ...
    def core_hours(self) -> float: ...
    @property
    def adapt_decisions(self) -> list[Any]: ...
    def restart_sync(self, engine_id: int) -> int: ...
    def logs(self, engine_id: int, tail: int = 200) -> str: ...
    def remove_engines_sync(self, engine_ids: list[int]) -> list[int]: ...
    def scale_sync(self, n: int) -> list[int]: ...
    def stop_sync(self) -> None: ...


__all__ = ["Panel", "STATE_COLOURS"]

log = logging.getLogger("pxpool.panel")
STATE_COLOURS = {
    "starting": "#6c757d",
    "idle": "#2e7d32",
    "busy": "#1565c0",
    "unresponsive": "#ef6c00",
    "dead": "#c62828",
    "restarting": "#8e24aa",
    "stopped": "#424242",
    "released": "#757575",
    "draining": "#f9a825",
    "stopped (walltime)": "#424242",
}
# rows in these states have no running engine to interrupt or stop
GONE_STATES = ("dead", "stopped", "restarting", "stopped (walltime)", "released")
SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 30  # refreshes shown in the tasks/s sparkline


def _state_class(state: str) -> str:
    """``pxpool-state-<state>`` as one CSS class: ``stopped (walltime)`` ->
    ``pxpool-state-stopped-walltime``."""
    return "pxpool-state-" + "-".join(re.findall(r"[a-z]+", state))


def _badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#000")
    return (
        f'<span class="pxpool-badge" style="background:{colour};color:white;'
        f'padding:1px 6px;border-radius:8px;font-size:0.85em">{html.escape(state)}</span>'
    )


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def _host_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def sparkline(values: list[float]) -> str:
    """Unicode blocks scaled to the largest value (all low when nothing happened)."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in values)


def _set(widget: widgets.Widget, **traits: Any) -> None:
    """Set only the traits that changed: each change is one message to the browser."""
    for name, value in traits.items():
        if getattr(widget, name) != value:
            setattr(widget, name, value)


class Shared:
    """Layouts and styles shared by every row: each widget instance is a model the
    browser keeps, so 256 rows with their own layouts would cost thousands more."""

    def __init__(self) -> None:
        self.row = widgets.Layout(align_items="center")
        self.state = widgets.Layout(width="130px")
        self.task = widgets.Layout(width="220px")
        self.bar = widgets.Layout(width="170px")
        self.meta = widgets.Layout(width="120px")
        self.button = widgets.Layout(width="105px")
        self.html = HTMLStyle()
        self.progress = ProgressStyle(description_width="36px")
        self.button_style = widgets.ButtonStyle()


class EngineRow(widgets.HBox):  # type: ignore[misc]  # ipywidgets ships no type information
    """One engine: id and state badge, task, CPU and memory bars, memory and heartbeat
    age, interrupt / restart / stop buttons, and a log button (always enabled)."""

    def __init__(self, engine_id: int, act: Callable[[str, int], None], shared: Shared) -> None:
        self.engine_id = engine_id
        self.state = widgets.HTML(layout=shared.state, style=shared.html)
        self.state.add_class("pxpool-state")
        self.task = widgets.HTML(layout=shared.task, style=shared.html)
        self.task.add_class("pxpool-task")
        self.cpu = widgets.FloatProgress(
            min=0.0, max=100.0, description="CPU", layout=shared.bar, style=shared.progress
        )
        self.memory = widgets.FloatProgress(
            min=0.0, max=1.0, description="mem", layout=shared.bar, style=shared.progress
        )
        self.meta = widgets.HTML(layout=shared.meta, style=shared.html)
        self.meta.add_class("pxpool-meta")
        buttons = []
        for action, icon in (
            ("interrupt", "hand-paper-o"),
            ("restart", "refresh"),
            ("stop", "stop"),
        ):
            button = widgets.Button(
                description=action, icon=icon, layout=shared.button, style=shared.button_style
            )
            button.add_class(f"pxpool-{action}")
            button.on_click(lambda _, a=action: act(a, engine_id))
            buttons.append(button)
        self.buttons = buttons
        # what the engine printed, shown under the table: also for a dead engine
        self.log_button = widgets.Button(
            description="log", icon="file-text-o", layout=shared.button, style=shared.button_style
        )
        self.log_button.add_class("pxpool-log-button")
        self.log_button.on_click(lambda _: act("log", engine_id))
        super().__init__(
            [self.state, self.task, self.cpu, self.memory, self.meta, *buttons, self.log_button],
            layout=shared.row,
        )
        self.add_class("pxpool-row")
        self.add_class(f"pxpool-row-{engine_id}")
        self._state = ""

    def update(self, snapshot: EngineSnapshot, memory_scale: int) -> None:
        if snapshot.state != self._state:
            if self._state:
                self.state.remove_class(_state_class(self._state))
            self.state.add_class(_state_class(snapshot.state))
            self.state.value = f"<b>{snapshot.engine_id}</b>&nbsp;{_badge(snapshot.state)}"
            self._state = snapshot.state
            alive = snapshot.state not in GONE_STATES
            for button in self.buttons:
                if button.description != "restart":
                    _set(button, disabled=not alive)
        limit = snapshot.mem_limit_bytes or memory_scale
        rss = snapshot.rss_bytes or 0
        age = snapshot.heartbeat_age_s
        _set(self.task, value=html.escape(snapshot.task or ""))
        _set(self.cpu, value=round(min(snapshot.cpu_percent or 0.0, 100.0), 0))
        _set(self.memory, value=round(min(rss / limit, 1.0), 2) if limit else 0.0)
        heartbeat = "-" if age is None else f"{age:.1f}s"
        _set(self.meta, value=f"{_mib(snapshot.rss_bytes)} &middot; {heartbeat}")


class Panel(widgets.VBox):  # type: ignore[misc]  # ipywidgets ships no type information
    """The live view of one pool; ``refresh`` seconds between updates (0: by hand)."""

    def __init__(
        self, pool: PanelPool | None, refresh: float = 1.0, dashboard: Dashboard | None = None
    ) -> None:
        if refresh < 0:
            raise ValueError(f"refresh must be >= 0 seconds; got {refresh!r}")
        self.pool = pool
        self.interval = refresh
        self.rows: dict[int, EngineRow] = {}
        self.shared = Shared()
        self.memory_scale = _host_memory()  # bar scale for engines without a known limit
        self.history: collections.deque[float] = collections.deque([0.0] * HISTORY, HISTORY)
        self._last_total: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.counts = widgets.HTML()
        self.counts.add_class("pxpool-counts")
        self.totals = widgets.HTML()
        self.totals.add_class("pxpool-totals")
        self.adapt = widgets.HTML()  # the latest decision of an adaptive pool
        self.adapt.add_class("pxpool-adapt")
        self.auto = widgets.ToggleButton(value=refresh > 0, description="auto-refresh")
        self.auto.add_class("pxpool-auto")
        self.add_count = widgets.BoundedIntText(
            value=1, min=1, max=1024, layout=widgets.Layout(width="70px")
        )
        self.add_button = widgets.Button(description="add engines", icon="plus")
        self.add_button.on_click(lambda _: self._act("add", self.add_count.value))
        self.stop_button = widgets.Button(description="stop pool", icon="power-off")
        self.stop_button.on_click(lambda _: self._act("stop pool", 0))
        self.error = widgets.HTML()
        self.error.add_class("pxpool-error")
        self.table = widgets.VBox()
        title = widgets.HTML(f"<b>pxpool {html.escape(pool.name) if pool else ''}</b>")
        controls = widgets.HBox([self.auto, self.add_count, self.add_button, self.stop_button])
        header = [title, self.counts, self.totals, self.adapt, controls, self.error]
        extra, self.stream = panel_widgets(dashboard)  # dashboard link, task stream
        super().__init__([*header, self.table, *extra])
        self.log_view = widgets.HTML()  # an engine's log, after its row's log button
        self.log_view.add_class("pxpool-log")
        self.children = (*tuple(self.children), self.log_view)  # type: ignore[has-type]
        self.add_class("pxpool-panel")
        self._thread: threading.Thread | None = None
        if pool is not None:
            self.refresh()
            if refresh > 0:
                self._thread = threading.Thread(
                    target=self._run, name=f"pxpool-panel-{pool.name}", daemon=True
                )
                self._thread.start()

    # ------------------------------------------------------------ refresh

    def refresh(self) -> None:
        """Update every widget from the pool's current snapshots."""
        assert self.pool is not None
        self.update(self.pool.health_snapshots())
        if self.stream is not None:
            self.stream.update()

    def update(self, snapshots: list[EngineSnapshot], now: float | None = None) -> None:
        """Update the widgets from ``snapshots`` (new rows for new engines)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            scale = self.memory_scale
            added = False
            for snapshot in snapshots:
                row = self.rows.get(snapshot.engine_id)
                if row is None:
                    row = self.rows[snapshot.engine_id] = EngineRow(
                        snapshot.engine_id, self._act, self.shared
                    )
                    added = True
                row.update(snapshot, scale)
            if added:
                self.table.children = tuple(self.rows[i] for i in sorted(self.rows))
            self._update_header(snapshots, now)

    def _update_header(self, snapshots: list[EngineSnapshot], now: float) -> None:
        counts = summarize(snapshots)
        parts = [f"{_badge(state)} {counts[state]}" for state in STATES if counts[state]]
        _set(self.counts, value="&nbsp; ".join(parts) or "no engines")
        done = sum(s.tasks_done for s in snapshots)
        failed = sum(s.tasks_failed for s in snapshots)
        if self._last_total is not None and now > self._last_total[0]:
            rate = max(0, done - self._last_total[1]) / (now - self._last_total[0])
            self.history.append(rate)
        self._last_total = (now, done)
        rate = self.history[-1]
        _set(
            self.totals,
            value=(
                f"tasks done <b>{done}</b>, failed <b>{failed}</b> &nbsp; "
                f'<span class="pxpool-spark" style="font-family:monospace">'
                f"{sparkline(list(self.history))}</span> {rate:.1f} tasks/s" + self._core_hours()
            ),
        )
        _set(self.adapt, value=self._adapt_line())

    def _adapt_line(self) -> str:
        """``pool.adapt``'s latest decision, one line ("" if the pool never adapted)."""
        decisions = self.pool.adapt_decisions if self.pool is not None else []
        if not decisions:
            return ""
        return f"<small>adapt: {html.escape(decisions[-1].describe())}</small>"

    def _core_hours(self) -> str:
        """Core-hours the pool used so far (idle_timeout releases engines to save them)."""
        if self.pool is None:
            return ""
        released = " &nbsp; engines released (idle)" if self.pool.state == "idle" else ""
        return f" &nbsp; core-hours <b>{self.pool.core_hours():.3f}</b>{released}"

    def _run(self) -> None:
        """Refresh every ``interval`` until the pool stops. The state is read before the
        refresh: a stop that begins during a refresh leaves rows showing the pool as it
        was, so the thread ends only after a refresh that began with the pool stopping."""
        assert self.pool is not None
        while not self._closed.wait(self.interval):
            if not self.auto.value:
                continue
            stopping = self.pool.state not in ("running", "idle")
            try:
                self.refresh()
            except Exception as exc:  # a refresh must not end the thread silently
                self._report(f"refresh failed: {exc!r}")
            if stopping:
                break  # this refresh showed every engine stopped

    @property
    def refreshing(self) -> bool:
        """True while the panel's refresh thread runs (it ends when the pool stops)."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop refreshing and close the widgets."""
        closed = getattr(self, "_closed", None)  # absent if __init__ failed early
        if closed is not None:
            closed.set()
        super().close()

    # ------------------------------------------------------------ actions

    def _act(self, action: str, engine_id: int) -> None:
        """Run a button's action in a worker thread; errors go to the error line."""
        threading.Thread(
            target=self._do, args=(action, engine_id), name="pxpool-panel-action", daemon=True
        ).start()

    def _do(self, action: str, engine_id: int) -> None:
        pool = self.pool
        try:
            if pool is None:
                raise RuntimeError("this panel is not bound to a pool")
            if action == "interrupt":
                pool.client.send_signal("SIGINT", targets=[engine_id], block=True)
            elif action == "restart":
                pool.restart_sync(engine_id)
            elif action == "stop":
                pool.remove_engines_sync([engine_id])  # the record follows
            elif action == "add":
                pool.scale_sync(pool.engines + engine_id)
            elif action == "stop pool":
                pool.stop_sync()
            elif action == "log":
                self.show_log(engine_id, pool.logs(engine_id))
                return  # reading a log changes nothing: the error line stays
            self._report("")
        except Exception as exc:
            target = f"engine {engine_id}" if action in ("interrupt", "restart", "stop") else "pool"
            self._report(f"{action} {target} failed: {exc}")
        if pool is not None:
            try:
                self.refresh()
            except Exception:
                pass

    def show_log(self, engine_id: int, text: str) -> None:
        """Show ``text`` (``pool.logs(engine_id)``) under the table, scrolled to its end."""
        _set(
            self.log_view,
            value=(
                f"<b>engine {engine_id} log</b>"
                '<pre style="max-height:320px;overflow:auto;font-size:0.85em;'
                f'display:flex;flex-direction:column-reverse"><div>{html.escape(text)}</div></pre>'
            ),
        )

    def _report(self, message: str) -> None:
        value = f'<span style="color:#c62828">{html.escape(message)}</span>' if message else ""
        _set(self.error, value=value)
        if message:
            log.warning("pxpool: panel: %s", message)
