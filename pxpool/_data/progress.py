"""A progress bar for long maps: ipywidgets in a notebook, tqdm in a terminal.

Short maps should print nothing, so by default the bar appears only once a map has
run for ``DELAY`` seconds; ``progress=True`` shows it at once, ``False`` never.
"""

from __future__ import annotations

import sys
import time
from typing import Any

DELAY = 2.0


def _in_notebook() -> bool:
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """Counts items done; creates its bar lazily, when the map turns out to be long."""

    def __init__(self, total: int | None, mode: bool | None, label: str) -> None:
        self.total = total
        self.mode = mode
        self.label = label
        self.done = 0
        self.began = time.monotonic()
        self._bar: Any = None
        self._widget: Any = None
        self._failed = False
        if mode:
            self._open()

    def update(self, items: int) -> None:
        self.done += items
        if self._bar is None and self._widget is None:
            if self.mode is None and time.monotonic() - self.began >= DELAY:
                self._open()
            else:
                return
        if self._widget is not None:
            if self.done > self._widget.max:  # unknown total: keep the bar below full
                self._widget.max = self.done * 2
            self._widget.value = self.done
            self._widget.description = f"{self.done}/{self.total or '?'}"
        elif self._bar is not None:
            self._bar.update(self.done - self._bar.n)

    def _open(self) -> None:
        if self._failed or self.mode is False:
            return
        try:
            if _in_notebook():
                import ipywidgets
                from IPython.display import display

                self._widget = ipywidgets.IntProgress(
                    value=self.done, min=0, max=self.total or max(self.done, 1) * 2
                )
                self._widget.description = f"{self.done}/{self.total or '?'}"
                display(ipywidgets.HBox([ipywidgets.Label(self.label), self._widget]))
            elif self.mode or sys.stderr.isatty():
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, desc=self.label, initial=self.done)
        except Exception:  # no widgets or no tqdm: run without a bar
            self._failed = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._widget is not None:
            self._widget.bar_style = "success" if self.total in (None, self.done) else "danger"
            if self.total is None:
                self._widget.max = max(self.done, 1)
                self._widget.value = self.done
