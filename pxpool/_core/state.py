"""Named states: of a pool, and of the engine operations a pool has in flight.

The states are string enums, so ``pool.state == "running"`` keeps working for users
and logs print plain words; inside pxpool they are compared as members.

Engine operations (a restart replacing engines, a removal stopping them) are
recorded while they run, so health can show ``restarting`` / ``stopped`` and the
walltime watcher can leave those engines alone. They are read from other threads
(the health collector), hence the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum


class PoolState(StrEnum):
    """Where a pool is in its life (``pool.state``)."""

    NEW = "new"  # made, never started (or disconnected)
    STARTING = "starting"
    RUNNING = "running"
    IDLE = "idle"  # engines released after idle_timeout; the controller runs
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # start failed; what it started is stopped
    ATTACHED = "attached"  # read from another process's record, not yet connected

    @property
    def uses_engines(self) -> bool:
        """True while the pool has (or may wake) engines: running or idle."""
        return self in (PoolState.RUNNING, PoolState.IDLE)


class OperationKind(StrEnum):
    """What a pool is doing to some of its engines right now."""

    RESTART = "restarting"  # stopping them and starting new processes under their ids
    REMOVE = "stopped"  # stopping them for good (scale down, idle release, a panel stop)


@dataclass(eq=False)
class Operation:
    """One operation in flight; its identity tells one restart from the next."""

    kind: OperationKind
    engine_ids: tuple[int, ...]


@dataclass
class Operations:
    """The engine operations a pool has in flight, by engine id.

    An engine already under an operation keeps it when an inner one starts (a restart
    removes its engines first: they stay ``restarting``)."""

    _by_engine: dict[int, Operation] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def running(self, kind: OperationKind, engine_ids: list[int]) -> Iterator[Operation]:
        """Record ``kind`` on ``engine_ids`` for the duration of the ``with`` block."""
        operation = Operation(kind, tuple(engine_ids))
        with self._lock:
            mine = [i for i in engine_ids if i not in self._by_engine]
            for engine_id in mine:
                self._by_engine[engine_id] = operation
        try:
            yield operation
        finally:
            with self._lock:
                for engine_id in mine:
                    if self._by_engine.get(engine_id) is operation:
                        del self._by_engine[engine_id]

    def snapshot(self) -> dict[int, Operation]:
        """A copy: engine id -> the operation acting on it now."""
        with self._lock:
            return dict(self._by_engine)

    def of_kind(self, kind: OperationKind) -> dict[int, Operation]:
        return {i: op for i, op in self.snapshot().items() if op.kind is kind}
