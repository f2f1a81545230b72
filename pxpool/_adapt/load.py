"""What an adaptive pool looks at: tasks waiting and running, and which engines work.

Two routes carry a pool's work, and both are read:

- the task lane (``pool.submit``, ``pool.apply``, ``pool.map``'s chunks, the executor,
  joblib): its queue on the client, and the tasks in flight on each engine (the lane
  sends each engine a few ahead; those count as running there, not as waiting), with
  its measured seconds per task;
- ipyparallel's hub (``pool.lbview()``, ``%%px``, views): ``queue_status()`` lists the
  tasks the scheduler has not assigned and, per engine, the tasks queued or running
  there; all but one on an engine wait.

An engine works when either route has a task on it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .policy import EngineSet, Observation

__all__ = ["HubLoad", "LaneLoad", "LaneProbe", "hub_load", "observation"]


class LaneLoad(Protocol):
    """One look at the task lane (:meth:`pxpool._tasks.lane.Lane.load` answers one)."""

    @property
    def queued(self) -> int: ...  # tasks on the client waiting for an engine
    @property
    def in_flight(self) -> Mapping[int, int]: ...  # engine id -> its tasks sent and not done
    @property
    def task_seconds(self) -> float | None: ...  # the lane's running estimate


class LaneProbe(Protocol):
    """What adapting asks of the task lane."""

    def load(self) -> LaneLoad: ...

    def retire(self, engine_ids: list[int], retired: bool = True) -> bool: ...


@dataclass(frozen=True)
class HubLoad:
    """One look at the hub: tasks it has not assigned, and tasks per engine."""

    unassigned: int = 0
    per_engine: dict[int, int] = field(default_factory=dict)  # queued or running there


def hub_load(status: Mapping[Any, Any]) -> HubLoad:
    """``client.queue_status()`` as counts (its per-engine entries have ``queue``, direct
    work, and ``tasks``, load-balanced work; both include what runs now)."""
    per_engine = {
        int(key): int(value.get("queue", 0)) + int(value.get("tasks", 0))
        for key, value in status.items()
        if isinstance(key, int) and isinstance(value, Mapping)
    }
    return HubLoad(int(status.get("unassigned", 0) or 0), per_engine)


def observation(
    engine_sets: Mapping[str, Collection[int]],
    registered: Collection[int],
    moving: Collection[int],
    starting: int,
    lane: LaneLoad,
    hub: HubLoad,
) -> Observation:
    """The look a :class:`~pxpool._adapt.policy.Policy` decides on. ``moving``: engines
    joining, restarting or being removed (their sets are not ready); an engine neither
    registered nor moving is gone (dead, not replaced) and not counted."""
    lane_waiting = lane.queued
    hub_waiting = hub.unassigned + sum(max(n - 1, 0) for n in hub.per_engine.values())
    work = lane_waiting + sum(lane.in_flight.values()) + hub.unassigned
    work += sum(hub.per_engine.values())
    busy = {i for i, n in lane.in_flight.items() if n} | {i for i, n in hub.per_engine.items() if n}
    live, moved = set(registered), set(moving)
    sets = tuple(
        EngineSet(
            set_id,
            tuple(sorted(ids)),
            ready=bool(ids) and set(ids) <= live and not set(ids) & moved,
            busy=bool(set(ids) & busy),
            joining=bool(set(ids) & moved),
            alive=len(set(ids) & (live | moved)),
        )
        for set_id, ids in sorted(engine_sets.items())
    )
    return Observation(sets, starting, lane_waiting + hub_waiting, work, lane.task_seconds or None)
