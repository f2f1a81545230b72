"""Adaptive pools' decisions under a fake clock: a simulated pool whose jobs take a while
to start and whose engines run 0.2 s tasks, driven one look per second (issue #19:
grow while tasks wait, shrink jobs idle past a threshold, whole jobs, no oscillation)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from pxpool._adapt.load import HubLoad, hub_load, observation
from pxpool._adapt.policy import (
    MAX_FAILURES,
    UNKNOWN_TASK_SECONDS,
    Action,
    AdaptSettings,
    Decision,
    EngineSet,
    Observation,
    Policy,
    check_settings,
)
from pxpool._tasks.support import LaneLoad

TASK = 0.2  # seconds per task in the simulation


@dataclass
class SimPool:
    """Engine sets that join ``start_delay`` after a grow asked for them, and a queue of
    equal tasks that ready engines work off."""

    policy: Policy
    start_delay: float = 2.0
    now: float = 0.0
    tasks: float = 0.0  # tasks not done
    next_id: int = 0
    sets: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)
    log: list[Decision] = field(default_factory=list)
    started_at: dict[str, float] = field(default_factory=dict)
    stopped_at: dict[str, float] = field(default_factory=dict)

    def add_sets(self, engines: int, job_size: int) -> None:
        for _ in range(engines // job_size):
            ids = tuple(range(self.next_id, self.next_id + job_size))
            self.next_id += job_size
            name = f"job-{ids[0]}"
            self.sets[name] = ids
            self.ready_at[name] = self.now + self.start_delay
            self.started_at[name] = self.now

    def ready(self) -> list[str]:
        return [s for s in self.sets if self.ready_at[s] <= self.now]

    def look(self) -> Observation:
        ready = self.ready()
        engines = sum(len(self.sets[s]) for s in ready)
        pending = math.ceil(self.tasks)
        return Observation(
            tuple(
                EngineSet(s, ids, s in ready, s in ready and pending > 0, s not in ready)
                for s, ids in self.sets.items()
            ),
            starting=0,
            waiting=max(pending - engines, 0),
            work=pending,
            task_seconds=TASK if self.now > 0 else None,
        )

    def step(self, seconds: float = 1.0) -> Decision | None:
        decision = self.policy.decide(self.look(), self.now)
        if decision is not None:
            self.log.append(decision)
            if decision.action is Action.GROW:
                self.add_sets(decision.count, self.policy.settings.job_size)
            else:
                for name in decision.sets:
                    del self.sets[name]
                    self.stopped_at[name] = self.now
        engines = sum(len(self.sets[s]) for s in self.ready())
        self.tasks = max(self.tasks - engines * seconds / TASK, 0.0)
        self.now += seconds
        return decision

    def engines(self) -> int:
        return sum(len(ids) for ids in self.sets.values())


def settings(**changes: Any) -> AdaptSettings:
    values: dict[str, Any] = {
        "minimum": 1,
        "maximum": 4,
        "target_seconds": 1.0,
        "idle_seconds": 5.0,
        "interval": 1.0,
        "job_size": 1,
    }
    values.update(changes)
    return check_settings(
        values["minimum"],
        values["maximum"],
        values["target_seconds"],
        values["idle_seconds"],
        values["interval"],
        values["job_size"],
    )


def assert_no_oscillation(sim: SimPool) -> None:
    """No look both started and stopped engines; no set stopped before it had been up
    and idle for idle_seconds."""
    cycles: dict[int, set[Action]] = {}
    for decision in sim.log:
        cycles.setdefault(decision.cycle, set()).add(decision.action)
    assert all(len(actions) == 1 for actions in cycles.values()), cycles
    idle = sim.policy.settings.idle_seconds
    for name, stopped in sim.stopped_at.items():
        assert stopped - sim.ready_at[name] >= idle, (name, sim.started_at[name], stopped)


def test_a_burst_grows_to_the_maximum_then_shrinks_back_after_the_idle_threshold() -> None:
    sim = SimPool(Policy(settings()))
    sim.add_sets(1, 1)
    sim.ready_at["job-0"] = 0.0
    sim.tasks = 200
    grow = sim.step()
    assert grow is not None and grow.action is Action.GROW
    assert grow.count == 3 and grow.target == 4  # 200 x 0.5 s (not measured yet) / 1 s
    while sim.tasks > 0:
        assert sim.step() is None or sim.log[-1].action is not Action.SHRINK
        assert sim.engines() == 4  # starting jobs count: nothing asked twice
    done = sim.now
    while sim.engines() > 1:
        sim.step()
        assert sim.now - done <= 5.0 + 2 * 1.0, "shrank back within the idle threshold"
    assert [d.action for d in sim.log] == [Action.GROW, Action.SHRINK]
    assert sim.log[-1].count == 3 and sim.engines() == 1
    for _ in range(30):
        assert sim.step() is None  # at the minimum: quiet
    assert_no_oscillation(sim)


def test_load_that_comes_and_goes_faster_than_the_idle_threshold_keeps_the_engines() -> None:
    sim = SimPool(Policy(settings(idle_seconds=10.0)))
    sim.add_sets(1, 1)
    sim.ready_at["job-0"] = 0.0
    for second in range(120):
        if second % 8 == 0:
            sim.tasks += 40  # a burst every 8 s: 2 s of work for 4 engines
        sim.step()
    assert [d.action for d in sim.log] == [Action.GROW]
    assert sim.engines() == 4
    assert_no_oscillation(sim)


def test_whole_jobs_start_and_stop_and_a_job_is_never_split() -> None:
    sim = SimPool(Policy(settings(minimum=2, maximum=8, job_size=2, target_seconds=2.0)))
    sim.add_sets(2, 2)
    sim.ready_at["job-0"] = 0.0
    sim.tasks = 20  # 20 x 0.5 s / 2 s -> 5 engines: 3 more, rounded up to 2 jobs
    grow = sim.step()
    assert grow is not None and grow.count == 4
    assert sorted(sim.sets) == ["job-0", "job-2", "job-4"]
    assert all(len(ids) == 2 for ids in sim.sets.values())
    for _ in range(40):
        sim.step()
    assert len(sim.sets) == 1 and sim.engines() == 2  # back to minimum=2: one whole job
    shrink = [d for d in sim.log if d.action is Action.SHRINK]
    assert shrink and all(d.count % 2 == 0 for d in shrink)
    assert_no_oscillation(sim)


def test_a_job_still_in_the_queue_counts_and_is_never_stopped() -> None:
    sim = SimPool(Policy(settings(idle_seconds=2.0)), start_delay=30.0)
    sim.add_sets(1, 1)
    sim.ready_at["job-0"] = 0.0
    sim.tasks = 20
    sim.step()
    assert sim.engines() == 4
    for _ in range(25):  # the burst ends on the one engine while 3 wait in the queue
        sim.step()
    assert sim.tasks == 0 and [d.action for d in sim.log] == [Action.GROW]
    assert len(sim.sets) == 4  # pending jobs were not cancelled (dask-jobqueue #498)
    for _ in range(15):
        sim.step()
    assert sim.engines() == 1  # once they came and stayed idle
    assert_no_oscillation(sim)


def test_minimum_zero_releases_every_engine_in_one_decision() -> None:
    sim = SimPool(Policy(settings(minimum=0, idle_seconds=3.0)))
    sim.add_sets(2, 1)
    sim.ready_at.update({"job-0": 0.0, "job-1": 0.0})
    decisions = [sim.step() for _ in range(5)]
    release = [d for d in decisions if d is not None]
    assert [d.action for d in release] == [Action.RELEASE]
    assert release[0].engine_ids == (0, 1) and release[0].sets == ("job-0", "job-1")
    assert release[0].cycle == 4  # idle 3 s from the first look at 0 s


def test_nothing_shrinks_while_tasks_wait_or_right_after_a_grow() -> None:
    policy = Policy(settings(idle_seconds=2.0, maximum=2))
    idle_set = EngineSet("engine-1", (1,), ready=True, busy=False)
    busy_set = EngineSet("engine-0", (0,), ready=True, busy=True)
    waiting = Observation((busy_set, idle_set), waiting=5, work=6, task_seconds=1.0)
    for now in range(10):  # at the maximum: no grow; tasks wait: no shrink
        assert policy.decide(waiting, float(now)) is None
    policy = Policy(settings(idle_seconds=2.0))
    first = Observation((busy_set,), waiting=5, work=6, task_seconds=1.0)
    grew = policy.decide(first, 0.0)
    assert grew is not None and grew.action is Action.GROW
    quiet = Observation((idle_set, EngineSet("engine-2", (2,), True, False)))
    assert policy.decide(quiet, 1.0) is None
    assert policy.decide(quiet, 1.5) is None  # within idle_seconds of the grow
    late = policy.decide(quiet, 3.5)
    assert late is not None and late.action is Action.SHRINK and late.count == 1


def test_target_follows_expected_run_time_over_target_seconds() -> None:
    policy = Policy(settings(minimum=0, maximum=100, target_seconds=5.0))
    no_sets: tuple[EngineSet, ...] = ()
    assert policy.target(Observation(no_sets, work=200, task_seconds=0.2)) == 8
    assert policy.target(Observation(no_sets, work=3, task_seconds=60.0)) == 3  # <= tasks
    assert policy.target(Observation(no_sets, work=1, task_seconds=0.001)) == 1
    assert policy.target(Observation(no_sets, work=0)) == 0
    unknown = Observation(no_sets, work=100)
    assert policy.target(unknown) == math.ceil(100 * UNKNOWN_TASK_SECONDS / 5.0)
    assert Policy(settings(maximum=4)).target(Observation(no_sets, work=1000)) == 4


def test_failed_starts_back_off_then_stop_adapting() -> None:
    policy = Policy(settings())
    need = Observation((), waiting=10, work=10, task_seconds=1.0)
    assert policy.decide(need, 0.0) is not None
    assert not policy.failed(0.0)
    assert policy.decide(need, 1.0) is None  # back-off: 2 s
    assert policy.decide(need, 2.5) is not None
    assert [policy.failed(3.0) for _ in range(MAX_FAILURES - 1)][-1] is True
    policy.succeeded()
    assert policy.decide(need, 3.0) is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minimum": -1}, r"minimum must be a whole number >= 0; got -1"),
        ({"maximum": "4"}, r"maximum must be a whole number >= 0; got '4'"),
        ({"minimum": 5, "maximum": 4}, r"maximum=4 must be >= minimum=5"),
        ({"minimum": 0, "maximum": 0}, r"maximum=0 must be >= minimum=0 and >= 1"),
        ({"target_seconds": 0}, r"target_seconds must be a positive number; got 0"),
        ({"minimum": 0, "maximum": 5, "job_size": 2}, r"maximum=5 is not a whole .*use 4 or 6$"),
        ({"minimum": 0, "maximum": 1, "job_size": 2}, r"maximum=1 .*use 2$"),
        ({"minimum": 1, "job_size": 2}, r"minimum=1 .*engines_per_job=2 .*use 0 or 2$"),
    ],
)
def test_bad_settings_name_the_value_and_what_is_allowed(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        settings(**kwargs)


def test_load_counts_what_waits_apart_from_what_the_lane_sent_ahead() -> None:
    lane = LaneLoad(queued=5, in_flight={0: 2, 1: 0}, task_seconds=0.2)
    hub = hub_load(
        {0: {"queue": 0, "completed": 3, "tasks": 0}, 2: {"queue": 1, "tasks": 2}, "unassigned": 4}
    )
    assert hub == HubLoad(4, {0: 0, 2: 3})
    seen = observation(
        {"engine-0": [0], "engine-1": [1], "job-2": [2, 3], "job-4": [4, 5], "engine-6": [6]},
        registered=[0, 1, 2, 3, 4],
        moving=[5],
        starting=2,
        lane=lane,
        hub=hub,
    )
    assert seen.waiting == 5 + 4 + 2  # lane queue, unassigned, all but one on engine 2
    assert seen.work == 5 + 2 + 4 + 3
    assert seen.engines == 6 + 2  # engine 6 is gone (dead, not replaced): not counted
    by_id = {s.set_id: s for s in seen.sets}
    assert by_id["engine-0"].busy and not by_id["engine-1"].busy and by_id["job-2"].busy
    assert by_id["job-2"].ready and not by_id["job-4"].ready  # engine 5 still starting
    assert by_id["job-4"].joining and not by_id["engine-6"].joining
    assert (by_id["engine-6"].engines, by_id["engine-6"].ready) == (0, False)
