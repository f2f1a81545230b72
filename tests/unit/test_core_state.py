"""The pool's named states and its record of engine operations in flight, which health
and the walltime watcher read instead of looking into running coroutines."""

from __future__ import annotations

import threading

from pxpool._core.state import OperationKind, Operations, PoolState


def test_pool_states_compare_equal_to_their_names() -> None:
    assert PoolState.RUNNING == "running"
    assert f"{PoolState.IDLE}" == "idle"
    assert PoolState.RUNNING.uses_engines and PoolState.IDLE.uses_engines
    assert not PoolState.STOPPED.uses_engines


def test_an_operation_is_recorded_only_while_it_runs() -> None:
    operations = Operations()
    with operations.running(OperationKind.REMOVE, [2, 3]) as removal:
        assert operations.snapshot() == {2: removal, 3: removal}
    assert operations.snapshot() == {}


def test_a_restart_keeps_its_engines_restarting_while_it_removes_them() -> None:
    operations = Operations()
    with operations.running(OperationKind.RESTART, [1, 2]) as restart:
        with operations.running(OperationKind.REMOVE, [1, 2, 5]) as removal:
            seen = operations.snapshot()
            assert seen[1] is restart and seen[2] is restart and seen[5] is removal
            assert set(operations.of_kind(OperationKind.RESTART)) == {1, 2}
        assert operations.snapshot() == {1: restart, 2: restart}
    assert operations.snapshot() == {}


def test_two_restarts_of_one_engine_are_told_apart_by_their_operation() -> None:
    operations = Operations()
    with operations.running(OperationKind.RESTART, [4]):
        first = operations.snapshot()[4]
    with operations.running(OperationKind.RESTART, [4]):
        second = operations.snapshot()[4]
    assert first is not second and first.kind is second.kind is OperationKind.RESTART


def test_operations_are_read_safely_from_another_thread() -> None:
    operations = Operations()
    seen: list[int] = []
    inside = threading.Event()
    done = threading.Event()

    def reader() -> None:
        inside.wait(5)
        seen.extend(operations.snapshot())
        done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    with operations.running(OperationKind.REMOVE, [7]):
        inside.set()
        assert done.wait(5)
    thread.join(5)
    assert seen == [7]
