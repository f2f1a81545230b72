"""A progress bar for long maps, drawn by ``tqdm.auto``: a widget in a notebook, text in a
terminal.

Short maps should print nothing, so by default the bar appears only once a map has run
for ``DELAY`` seconds; ``progress=True`` shows it at once, ``False`` never. The bar is
made only when it is due, not at the start of every map with a ``delay``: in a notebook
``tqdm.notebook`` builds its widgets when it is made, which costs a comm message to the
front end per map even when the bar is never shown. By default (``None``) a terminal
that is not a TTY (a log file, a batch job's output) gets no bar, as tqdm's own
``disable=None`` decides; a notebook always gets one.
"""

from __future__ import annotations

import time
from typing import Any

DELAY = 2.0


class Progress:
    """Counts items done; creates its bar lazily, when the map turns out to be long."""

    def __init__(self, total: int | None, mode: bool | None, label: str) -> None:
        self.total = total
        self.mode = mode
        self.label = label
        self.done = 0
        self.began = time.monotonic()
        self.bar: Any = None  # a tqdm.auto.tqdm once the bar is due
        self._failed = False
        if mode:
            self._open()

    def update(self, items: int) -> None:
        self.done += items
        if self.bar is None:
            if self.mode is None and time.monotonic() - self.began >= DELAY:
                self._open()
            return
        self.bar.update(items)

    def _open(self) -> None:
        if self._failed or self.mode is False:
            return
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total,
                desc=self.label,
                initial=self.done,
                disable=False if self.mode else None,  # None: no bar where stderr is no TTY
            )
        except Exception:  # tqdm or its widgets unusable here: run without a bar
            self._failed = True
            return
        if not self.bar.disable:  # elapsed counts from the map's start
            self.bar.start_t -= time.monotonic() - self.began

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
