"""The task stream as a plotly figure: one lane per engine, one bar per task or chunk.

Dask's dashboard taught users to read a pool this way: bars coloured by function show
what each engine did, gaps show idle time, long bars show stragglers. The figure is
plain data (plotly's JSON form, no plotly import), so the page draws it with plotly.js
and the panel with plotly's FigureWidget from the same function.

Times on the axis are the wall clock of the pool's process, as local time; the axis spans
the window, or less while all events are younger (at least ``MIN_SPAN``); a bar is at
least ``MIN_WIDTH`` of the span shown wide so that a task of a millisecond stays visible
(its hover text says how long it really took). Failed tasks (raised, engine died,
timed out) have a red outline and a cross pattern.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

__all__ = ["PALETTE", "FAILED", "WINDOW", "colour", "figure", "lane"]

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#aec7e8",
)
FAILED = "#c62828"
WINDOW = 300.0  # seconds shown by default
MIN_WIDTH = 1 / 600  # of the window
MIN_SPAN = 30.0  # seconds shown at least, while the events are younger than the window


def colour(function: str) -> str:
    """The same colour for a function in every refresh, page and panel."""
    return PALETTE[zlib.crc32(function.encode()) % len(PALETTE)]


def lane(engine_id: int) -> str:
    return f"engine {engine_id}"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).isoformat(timespec="milliseconds")


def _traces(events: Iterable[Sequence[Any]], window: float) -> list[dict[str, Any]]:
    """One bar trace per function; ``events`` as :meth:`TaskEvent.as_list` gives them."""
    shortest = window * MIN_WIDTH * 1000.0
    by_function: dict[str, dict[str, list[Any]]] = {}
    for engine_id, function, start, end, ok, route in events:
        bars = by_function.setdefault(
            function, {"base": [], "x": [], "y": [], "custom": [], "line": [], "shape": []}
        )
        took = max(0.0, float(end) - float(start))
        bars["base"].append(_when(float(start)))
        bars["x"].append(max(took * 1000.0, shortest))
        bars["y"].append(lane(int(engine_id)))
        bars["custom"].append([round(took, 4), "ok" if ok else "failed", route])
        bars["line"].append(FAILED if not ok else colour(function))
        bars["shape"].append("" if ok else "x")
    traces = []
    for function in sorted(by_function):
        bars = by_function[function]
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": function,
                "base": bars["base"],
                "x": bars["x"],
                "y": bars["y"],
                "customdata": bars["custom"],
                "marker": {
                    "color": colour(function),
                    "line": {"color": bars["line"], "width": 1.5},
                    "pattern": {"shape": bars["shape"], "fgcolor": FAILED},
                },
                "hovertemplate": (
                    "%{fullData.name} on %{y}<br>%{customdata[0]:.3f} s, %{customdata[1]}"
                    " (%{customdata[2]})<extra></extra>"
                ),
            }
        )
    return traces


def figure(
    events: Iterable[Sequence[Any]],
    engine_ids: Iterable[int],
    now: float,
    window: float = WINDOW,
    height: int | None = None,
) -> dict[str, Any]:
    """The task stream of ``events`` over the ``window`` seconds before ``now``, with a
    lane for each of ``engine_ids`` (and for any engine an event names)."""
    events = list(events)
    lanes = sorted({int(i) for i in engine_ids} | {int(e[0]) for e in events})
    rows = max(len(lanes), 1)
    earliest = min((float(e[2]) for e in events), default=now)
    shown = min(window, max(MIN_SPAN, (now - earliest) * 1.05))  # a young pool: no empty minutes
    return {
        "data": _traces(events, shown),
        "layout": {
            "barmode": "overlay",
            "bargap": 0.25,
            "height": height or min(120 + 28 * rows, 700),
            "margin": {"l": 80, "r": 20, "t": 10, "b": 50},
            "xaxis": {"type": "date", "range": [_when(now - shown), _when(now)]},
            "yaxis": {
                "type": "category",
                "categoryorder": "array",
                "categoryarray": [lane(i) for i in lanes],
                "autorange": "reversed",
            },
            "legend": {"orientation": "v"},
            "uirevision": "task-stream",  # zoom and hidden functions survive refreshes
        },
    }
