"""LostWatch's rule (pxpool/_reliability/lost.py) on a pool's state as plain values:
an engine its running set owns, that the hub does not list and no operation explains,
is reported once after LOST_GRACE seconds; sets that ended, engines being started,
removed or replaced, and engines that came back are not."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pxpool._core.state import OperationKind, Operations, PoolState
from pxpool._reliability.lost import LOST_GRACE, LostWatch


class Pool(SimpleNamespace):
    """The parts of PoolCore the watch reads."""

    def registered_ids(self) -> list[int]:
        return sorted(self.registered)

    def owner_ids(self) -> set[int]:
        return {i for ids in self.engine_sets.values() for i in ids}


def pool(**launchers: str) -> Any:
    return Pool(
        state=PoolState.RUNNING,
        cluster=SimpleNamespace(
            engines={s: SimpleNamespace(state=v) for s, v in launchers.items()}
        ),
        engine_sets={"a": [0, 1], "b": [2]},
        registered={0, 1, 2},
        replacing=set(),
        joining=set(),
        operations=Operations(),
    )


def watch(core: Any) -> tuple[LostWatch, list[tuple[int, ...]]]:
    told: list[tuple[int, ...]] = []
    return LostWatch(core, told.append), told


def test_a_missing_engine_of_a_running_set_is_reported_once_after_the_grace() -> None:
    core = pool(a="running", b="running")
    lost, told = watch(core)
    core.registered.discard(1)  # engine 1 died alone; its job (set a) runs on
    lost.check(100.0)
    lost.check(100.0 + LOST_GRACE / 2)
    assert told == []
    lost.check(100.0 + LOST_GRACE)
    lost.check(100.0 + 2 * LOST_GRACE)
    assert told == [(1,)]
    core.registered.add(1)  # it came back (replaced): a later loss is told again
    lost.check(200.0)
    core.registered.discard(1)
    lost.check(300.0)
    lost.check(300.0 + LOST_GRACE)
    assert told == [(1,), (1,)]


def test_ended_sets_and_explained_absences_are_not_reported() -> None:
    core = pool(a="running", b="after")  # set b's launcher ended: the death path's
    lost, told = watch(core)
    core.registered -= {0, 1, 2}
    core.joining.add(0)  # being started
    core.replacing.add(1)  # being replaced
    with core.operations.running(OperationKind.REMOVE, [2]):
        for t in range(10):
            lost.check(float(t) * LOST_GRACE)
    assert told == []


def test_a_short_absence_is_forgotten() -> None:
    core = pool(a="running", b="running")
    lost, told = watch(core)
    core.registered.discard(0)
    lost.check(0.0)
    core.registered.add(0)
    lost.check(LOST_GRACE / 2)
    core.registered.discard(0)
    lost.check(LOST_GRACE)  # missing again since now, not since 0.0
    assert told == [] and lost.missing_since == {0: LOST_GRACE}
