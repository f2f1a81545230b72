"""The decisions of an adaptive pool, apart from any pool: what to do on one look.

:class:`Policy` gets one :class:`Observation` per cycle (the load and the pool's engine
sets, a batch job being one set) and the time, and answers with at most one
:class:`Decision`: grow by whole jobs, shrink by whole jobs, release every engine
(``minimum = 0``), or nothing. It keeps no clock of its own, so tests drive it with a
fake one.

How many engines the load needs follows Dask's adaptive target: the expected run time
of the work (tasks waiting and running, times the measured seconds per task) divided
by ``target_seconds``, never more engines than tasks, within ``[minimum, maximum]``.

Hysteresis, so a pool never starts and stops engines back and forth (the oscillation
dask-jobqueue users report when adaptive scaling stopped workers of jobs still starting,
or single workers of multi-worker jobs, then asked for them again):

- It grows only while tasks wait for an engine (or the pool is below ``minimum``), and
  counts engines still starting (a job pending in the queue) as engines it has.
- It shrinks only whole engine sets all of whose engines have been registered and idle
  for ``idle_seconds`` without a break; a set's idle time starts when it joined.
- It shrinks nothing while tasks wait, while engines start, or within ``idle_seconds``
  of its last grow; and never grows and shrinks in the same cycle.
- A start that failed is tried again after a back-off that doubles; after
  ``MAX_FAILURES`` failures in a row the runner stops adapting and says why.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Action",
    "AdaptSettings",
    "Decision",
    "EngineSet",
    "Observation",
    "Policy",
    "check_settings",
]

UNKNOWN_TASK_SECONDS = 0.5  # a task's expected run time before any was measured
MAX_FAILURES = 3  # failed starts in a row before adapting stops
MAX_BACKOFF = 60.0  # seconds: the longest wait before trying a failed start again


class Action(StrEnum):
    """What one decision did (``Decision.action``)."""

    ON = "adapt on"  # adapting started, or its settings changed
    OFF = "adapt off"  # adapting stopped (``pool.adapt(False)``, too many failures)
    GROW = "grow"  # start engines (whole jobs)
    SHRINK = "shrink"  # stop engine sets (whole jobs) that stayed idle
    RELEASE = "release"  # every engine idle and minimum 0: the idle release
    FAILED = "failed"  # a grow, shrink or release did not complete


@dataclass(frozen=True)
class AdaptSettings:
    """What ``pool.adapt(...)`` asked for, checked (:func:`check_settings`)."""

    minimum: int
    maximum: int
    target_seconds: float
    idle_seconds: float
    interval: float  # seconds between cycles
    job_size: int = 1  # engines a grow adds at a time (a batch job's engines_per_job)

    def describe(self) -> str:
        return (
            f"{self.minimum}-{self.maximum} engines, target {self.target_seconds:g}s, "
            f"idle {self.idle_seconds:g}s"
        )


def check_settings(
    minimum: int,
    maximum: int | None,
    target_seconds: float,
    idle_seconds: float,
    interval: float,
    job_size: int = 1,
) -> AdaptSettings:
    """Settings, or a ValueError naming the bad value and what is allowed."""
    for name, value in (("minimum", minimum), ("maximum", maximum)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"pool.adapt: {name} must be a whole number >= 0; got {value!r}")
    assert maximum is not None  # (checked above; for the type checker)
    if maximum < max(minimum, 1):
        raise ValueError(
            f"pool.adapt: maximum={maximum} must be >= minimum={minimum} and >= 1; "
            "pass a larger maximum, or pool.adapt(False) to stop adapting"
        )
    for name, number in (
        ("target_seconds", target_seconds),
        ("idle_seconds", idle_seconds),
        ("interval", interval),
    ):
        if not isinstance(number, int | float) or isinstance(number, bool) or number <= 0:
            raise ValueError(f"pool.adapt: {name} must be a positive number; got {number!r}")
    for name, value in (("minimum", minimum), ("maximum", maximum)):
        if value % job_size:
            lower = value - value % job_size
            valid = [lower, lower + job_size] if lower or name == "minimum" else [job_size]
            raise ValueError(
                f"pool.adapt: {name}={value} is not a whole number of batch jobs of "
                f"engines_per_job={job_size} engines (jobs start and stop whole); "
                f"use {' or '.join(map(str, valid))}"
            )
    return AdaptSettings(
        minimum, maximum, float(target_seconds), float(idle_seconds), float(interval), job_size
    )


@dataclass(frozen=True)
class EngineSet:
    """One engine set (a batch job, an engine process) as one look saw it."""

    set_id: str
    engine_ids: tuple[int, ...]
    ready: bool  # every engine registered, none joining, restarting or being removed
    busy: bool  # some engine has a task (running or queued there)
    joining: bool = False  # some engine starting (a job still queued), restarting, stopping
    alive: int | None = None  # engines registered or on their way (None: all of them)

    @property
    def engines(self) -> int:
        return len(self.engine_ids) if self.alive is None else self.alive


@dataclass(frozen=True)
class Observation:
    """One look at the pool."""

    sets: tuple[EngineSet, ...]
    starting: int = 0  # engines asked for that no set holds yet
    waiting: int = 0  # tasks waiting for an engine
    work: int = 0  # tasks waiting or running
    task_seconds: float | None = None  # measured run time of a task, if known

    @property
    def engines(self) -> int:
        """Engines the pool has or will have soon (starting ones count)."""
        return sum(s.engines for s in self.sets) + self.starting


@dataclass(frozen=True)
class Decision:
    """One entry of ``pool.adapt_decisions``: what adapting did, when, and why."""

    cycle: int  # the look that made it (one per ``interval``)
    time: float  # time.time()
    action: Action
    engines: int  # engines the pool had (or had on their way) when deciding
    target: int  # engines the load needed then, within [minimum, maximum]
    reason: str
    count: int = 0  # engines started or stopped
    engine_ids: tuple[int, ...] = ()  # ...their ids
    sets: tuple[str, ...] = ()  # engine sets (batch jobs) stopped

    def describe(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.time))
        what = str(self.action)
        if self.count:
            what += f" {self.count} engine(s) {list(self.engine_ids)}"
        if self.sets:
            what += f" (sets {', '.join(self.sets)})"
        return f"{when} {what}: {self.reason} [had {self.engines}, target {self.target}]"


class Policy:
    """The decisions (see the module docstring); one per adaptive pool."""

    def __init__(self, settings: AdaptSettings) -> None:
        self.settings = settings
        self.cycle = 0
        self.idle_since: dict[str, float] = {}  # set id -> first look of its idle stretch
        self.last_grow: float | None = None
        self.failures = 0
        self.retry_at = 0.0

    def target(self, seen: Observation) -> int:
        """Engines the work needs: its expected run time over ``target_seconds``."""
        s = self.settings
        need = 0
        if seen.work > 0:
            seconds = seen.task_seconds if seen.task_seconds else UNKNOWN_TASK_SECONDS
            need = min(seen.work, max(1, math.ceil(seen.work * seconds / s.target_seconds)))
        return min(max(need, s.minimum), s.maximum)

    def decide(self, seen: Observation, now: float) -> Decision | None:
        """At most one decision for this look, taken at monotonic time ``now``."""
        self.cycle += 1
        self._clock(seen, now)
        target = self.target(seen)
        have = seen.engines
        if have < target and (seen.waiting > 0 or have < self.settings.minimum):
            return self._grow(seen, target, now)
        if seen.waiting or seen.starting or any(s.joining for s in seen.sets):
            return None  # work waits or engines are on their way: keep every engine
        if self.last_grow is not None and now - self.last_grow < self.settings.idle_seconds:
            return None  # engines just asked for get their chance first
        return self._shrink(seen, target, now)

    def _clock(self, seen: Observation, now: float) -> None:
        """Idle since: reset while a set works, starts, or is acted on."""
        known = {s.set_id for s in seen.sets}
        for set_id in set(self.idle_since) - known:  # stopped (a set id may come back)
            del self.idle_since[set_id]
        for engine_set in seen.sets:
            if engine_set.busy or not engine_set.ready:
                self.idle_since.pop(engine_set.set_id, None)  # counts from its next idle look
            else:
                self.idle_since.setdefault(engine_set.set_id, now)

    def _grow(self, seen: Observation, target: int, now: float) -> Decision | None:
        s = self.settings
        if now < self.retry_at:
            return None  # a failed start waits out its back-off
        jobs = math.ceil((target - seen.engines) / s.job_size)
        room = (s.maximum - seen.engines) // s.job_size
        count = min(jobs, room) * s.job_size
        if count <= 0:
            return None
        self.last_grow = now
        reason = (
            f"{seen.waiting} task(s) waiting, {seen.work} in all"
            if seen.waiting
            else f"below minimum={s.minimum}"
        )
        return self._decision(Action.GROW, seen, target, reason, count)

    def _shrink(self, seen: Observation, target: int, now: float) -> Decision | None:
        s = self.settings
        idle = [
            e
            for e in seen.sets
            if e.ready and not e.busy and now - self.idle_since[e.set_id] >= s.idle_seconds
        ]
        spare = seen.engines - target
        chosen: list[EngineSet] = []
        for engine_set in sorted(idle, key=lambda e: (self.idle_since[e.set_id], e.set_id)):
            if len(engine_set.engine_ids) <= spare:
                chosen.append(engine_set)
                spare -= len(engine_set.engine_ids)
        if not chosen:
            return None
        ids = tuple(sorted(i for e in chosen for i in e.engine_ids))
        names = tuple(e.set_id for e in chosen)
        reason = f"idle for {s.idle_seconds:g}s or more"
        action = Action.RELEASE if target == 0 and len(chosen) == len(seen.sets) else Action.SHRINK
        return self._decision(action, seen, target, reason, len(ids), ids, names)

    def _decision(
        self,
        action: Action,
        seen: Observation,
        target: int,
        reason: str,
        count: int = 0,
        engine_ids: tuple[int, ...] = (),
        sets: tuple[str, ...] = (),
    ) -> Decision:
        return Decision(
            self.cycle, time.time(), action, seen.engines, target, reason, count, engine_ids, sets
        )

    def failed(self, now: float) -> bool:
        """A start failed at ``now``: back off; True once adapting should stop."""
        self.failures += 1
        self.retry_at = now + min(self.settings.interval * 2**self.failures, MAX_BACKOFF)
        return self.failures >= MAX_FAILURES

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0

    def with_settings(self, settings: AdaptSettings) -> Policy:
        """The same clocks under new settings (``pool.adapt`` called again)."""
        policy = Policy(settings)
        policy.cycle, policy.idle_since = self.cycle, dict(self.idle_since)
        policy.last_grow = self.last_grow
        return policy
