"""A list that keeps only its most recent items: the client's task history.

ipyparallel's client appends every task id it sends to ``client.history`` and never
drops one: ~100 bytes a task, without end in a notebook that runs all day. pxpool's
client keeps the last :data:`KEEP_HISTORY` ids (``client.history[-1]``, the usual use,
works as before; an index counted from the start shifts as old ids go).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

KEEP_HISTORY = 10_000


class RecentItems(list):  # type: ignore[type-arg]  # task ids, as ipyparallel's list holds them
    """Drops its oldest items, in batches of ``keep // 4``, once it holds more than ``keep``."""

    def __init__(self, items: Iterable[Any] = (), keep: int = KEEP_HISTORY) -> None:
        super().__init__(items)
        self.keep = keep
        self._trim()

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) > self.keep + self.keep // 4:
            self._trim()

    def _trim(self) -> None:
        if len(self) > self.keep:
            del self[: len(self) - self.keep]
