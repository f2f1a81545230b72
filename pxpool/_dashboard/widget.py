"""The notebook panel's compact task stream: a plotly FigureWidget, drawn whole.

plotly because the same figure (:func:`pxpool._dashboard.stream.figure`) then draws the
page's stream with plotly.js and the panel's with FigureWidget (an anywidget in plotly
6+, so JupyterLab 4 and Notebook 7 show it without an extension to build); bars on a
date axis with hover text and a legend per function. The panel draws it anew when tasks
finished, and every few seconds so that the axis follows the clock.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

__all__ = ["Dashboard", "FigureSource", "StreamView", "panel_widgets", "stream_view"]

WINDOW = 60.0  # seconds the panel shows
REDRAW = 5.0  # seconds between redraws of a stream without new tasks
HEIGHT = 190


class FigureSource(Protocol):
    def figure(self, window: float, height: int | None = None) -> dict[str, Any]: ...


class Dashboard(FigureSource, Protocol):
    """The pool's dashboard (:class:`pxpool._dashboard.publisher.Dashboard`) as the
    panel shows it: a link to its page, and the compact task stream."""

    def path(self) -> str | None: ...


class StreamView:
    """A box holding a FigureWidget of ``source``'s task stream (see the module docstring).

    Each change draws a new FigureWidget in the box, made with the whole figure as its
    state. FigureWidget's own updates are deltas that its browser side can miss (one
    sent before its code loaded is lost, and a relayout after new traces left the date
    axis linear in JupyterLab 4), while a new widget's state is always drawn whole. A
    change is new bars, or ``REDRAW`` seconds passing, so the axis follows the clock."""

    def __init__(self, source: FigureSource, window: float = WINDOW, height: int = HEIGHT) -> None:
        import ipywidgets as widgets
        import plotly.graph_objects as go

        self.go = go
        self.source = source
        self.window = window
        self.height = height
        self.widget = widgets.Box()
        self.widget.add_class("pxpool-stream")
        self._data: list[dict[str, Any]] | None = None
        self._drawn_at = 0.0
        self.update()

    def update(self) -> None:
        figure = self.source.figure(self.window, self.height)
        data, layout = figure["data"], figure["layout"]
        now = time.monotonic()
        if data == self._data and now - self._drawn_at < REDRAW:
            return
        layout["legend"] = {"orientation": "v", "font": {"size": 10}}
        layout["margin"] = {"l": 70, "r": 10, "t": 6, "b": 24}
        old = self.widget.children
        self.widget.children = (self.go.FigureWidget(data=data, layout=layout),)
        for child in old:
            child.close()
        self._data, self._drawn_at = data, now


def stream_view(source: FigureSource) -> tuple[Any, StreamView | None]:
    """The widget to show and its view; without plotly (and anywidget), a note saying
    how to get the stream, and None."""
    try:
        view = StreamView(source)
    except ImportError as exc:
        import ipywidgets as widgets

        note = widgets.HTML(
            f"task stream: needs plotly and anywidget ({exc.name} is missing); "
            "<code>pip install 'pxpool[dashboard]'</code>"
        )
        return note, None
    return view.widget, view


def panel_widgets(dashboard: Dashboard | None) -> tuple[list[Any], StreamView | None]:
    """What the panel adds: a link to the pool's page (when a Jupyter server with
    pxpool's extension runs this kernel) and the compact task stream, with its view."""
    if dashboard is None:
        return [], None
    import html

    import ipywidgets as widgets

    shown, view = stream_view(dashboard)
    path = dashboard.path()
    if path is None:
        return [shown], view
    link = widgets.HTML(
        f'<a class="pxpool-dashboard-link" href="{html.escape(path)}" target="_blank" '
        'rel="noopener">open the dashboard &#8599;</a>'
    )
    return [link, shown], view
