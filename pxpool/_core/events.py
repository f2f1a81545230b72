"""What ran where and when: a bounded ring of finished tasks, and the maps running now.

Every route a task takes records here when its outcome arrives: the task lane
(``pool.submit``, ``pool.apply``, ``pool.map`` chunks; :mod:`pxpool._tasks`) and
ipyparallel's route through the hub (``pool.lbview()``, ``pool.view()``, ``%px``, map
chunks without a lane; :class:`pxpool._core.client.PxClient`). The dashboard's task stream
and the panel's draw from it. The ring keeps the last ``capacity`` events only, so a
pool that runs millions of tasks holds a few hundred kilobytes here, never more.

In the core because both routes record into it and the core imports no feature
package; each pool's :class:`~pxpool._core.core.PoolCore` owns one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["MapProgress", "TaskEvent", "TaskEvents", "DEFAULT_CAPACITY"]

DEFAULT_CAPACITY = 5000  # events kept: ~100 bytes each
FINISHED_MAPS = 5  # finished maps still shown, newest last


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One task or map chunk that finished: times are wall-clock seconds (``time.time()``)."""

    engine_id: int
    function: str  # the user's function, also for a map chunk (not its engine-side runner)
    start: float
    end: float
    ok: bool  # False: it raised, or its engine died, or its timeout stopped it
    route: str  # "lane" or "hub"

    def as_list(self) -> list[Any]:
        """Compact JSON form: ``[engine_id, function, start, end, ok, route]``."""
        return [self.engine_id, self.function, self.start, self.end, self.ok, self.route]


class MapProgress:
    """One ``pool.map`` as it runs: items done of how many (None: an iterator's unknown)."""

    def __init__(self, number: int, label: str, total: int | None) -> None:
        self.number = number
        self.label = label
        self.total = total
        self.done = 0
        self.began = time.time()
        self.ended: float | None = None
        self.ok: bool | None = None  # None while running

    def advance(self, items: int) -> None:
        self.done += items

    def as_dict(self) -> dict[str, Any]:
        return {
            "map": self.number,
            "label": self.label,
            "done": self.done,
            "total": self.total,
            "began": self.began,
            "ended": self.ended,
            "ok": self.ok,
        }


class TaskEvents:
    """The ring of one pool's finished tasks (thread-safe: recorded from the lane's and
    the client's threads, read from the panel's, the dashboard's and the user's)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a whole number >= 1; got {capacity!r}")
        self.capacity = capacity
        self._events: deque[TaskEvent] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.recorded = 0  # events ever recorded: changes whenever the ring does
        self._maps: dict[int, MapProgress] = {}
        self._finished: deque[MapProgress] = deque(maxlen=FINISHED_MAPS)
        self._numbers = itertools.count(1)

    def record(
        self,
        engine_id: int,
        function: str,
        start: float,
        end: float,
        ok: bool,
        route: str,
    ) -> None:
        """Keep one finished task (the oldest is dropped once the ring is full)."""
        event = TaskEvent(int(engine_id), function, float(start), float(max(end, start)), ok, route)
        with self._lock:
            self._events.append(event)
            self.recorded += 1

    def events(self, since: float | None = None) -> list[TaskEvent]:
        """The events kept, oldest first; with ``since``: those that ended after it."""
        with self._lock:
            events = list(self._events)
        if since is None:
            return events
        return [e for e in events if e.end >= since]

    @property
    def dropped(self) -> int:
        """Events recorded and no longer kept."""
        with self._lock:
            return self.recorded - len(self._events)

    def map_started(self, label: str, total: int | None) -> MapProgress:
        """A map begins: its progress, which the caller advances and :meth:`map_ended` ends."""
        progress = MapProgress(next(self._numbers), label, total)
        with self._lock:
            self._maps[progress.number] = progress
        return progress

    def map_ended(self, progress: MapProgress, ok: bool) -> None:
        progress.ended, progress.ok = time.time(), ok
        with self._lock:
            if self._maps.pop(progress.number, None) is not None:
                self._finished.append(progress)

    def maps(self) -> list[dict[str, Any]]:
        """The maps running now, then the last few that finished."""
        with self._lock:
            maps = [*self._maps.values(), *self._finished]
        return [m.as_dict() for m in maps]
