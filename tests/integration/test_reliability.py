"""Fault handling on a real local pool: runtime timeouts that stop tasks, engines that
die under a task (retried elsewhere or reported), self-healing with setup replay, and
the chaos test: engines killed every second while 500 tasks run."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pxpool
from pxpool._core.processes import launcher_processes as _launcher_processes

from .waits import wait_until

pytestmark = pytest.mark.integration
REPLACE_WAIT = 60.0  # seconds for a dead engine to be back (an id can stay reserved 30 s)


def engine_pid() -> int:
    import os

    return os.getpid()


def spin(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "finished"


def freeze_myself() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSTOP)


def die_once(marker: str) -> str:
    """Kill this engine the first time it runs; answer on any later run."""
    import os
    import signal

    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "answered"


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile(
        "local", engines=2, restart="on-failure", max_restarts=20, restart_backoff=0.1
    ) as started:
        yield started


def pids(pool: pxpool.Pool) -> dict[int, int]:
    return {i: pool.client[i].apply_sync(engine_pid) for i in pool.ids}


def test_timeout_interrupts_a_running_python_task(pool: pxpool.Pool) -> None:
    before = pids(pool)
    started = time.monotonic()
    with pytest.raises(pxpool.TaskTimeout, match=r"ran longer than timeout=0.5s.*interrupted"):
        pool.apply(spin, 60, timeout=0.5)
    assert time.monotonic() - started < 10
    assert pids(pool) == before  # interrupted, not replaced
    assert pool.apply(spin, 0.01, timeout=5) == "finished"


def test_timeout_replaces_an_engine_that_does_not_yield(pool: pxpool.Pool) -> None:
    """A SIGSTOP'd engine ignores SIGINT: it is killed and replaced, the rest finish."""
    before = pids(pool)
    with pytest.raises(pxpool.TaskTimeout, match="killed and replaced") as info:
        pool.apply(freeze_myself, timeout=1.0)
    engine = info.value.engine_id
    assert info.value.action == "replaced"
    assert pool.ids == [0, 1]
    after = pids(pool)
    assert after[engine] != before[engine]
    assert pool.map(lambda x: x * 2, range(100)) == [x * 2 for x in range(100)]


def test_map_timeout_names_the_chunk(pool: pxpool.Pool) -> None:
    with pytest.raises(pxpool.TaskTimeout, match=r"pool.map\(spin\) chunk of items 0..0"):
        pool.map(spin, [30.0], timeout=0.5)
    assert pool.map(spin, [0.01, 0.01], timeout=5) == ["finished", "finished"]


def test_load_balanced_view_timeout(pool: pxpool.Pool) -> None:
    view = pool.lbview(timeout=0.5)
    with pytest.raises(pxpool.TaskTimeout, match="task spin"):
        view.apply(spin, 60)
    assert view.apply(spin, 0.01) == "finished"


def test_apply_whose_engine_dies_runs_again_on_another(pool: pxpool.Pool, tmp_path: Path) -> None:
    assert pool.apply(die_once, str(tmp_path / "died")) == "answered"
    wait_until(lambda: pool.ids == [0, 1], REPLACE_WAIT, "the dead engine's replacement")


def test_without_retries_the_death_is_reported(pool: pxpool.Pool, tmp_path: Path) -> None:
    with pytest.raises(
        pxpool.EngineDied, match=r"engine \d died while running it \(killed by SIGKILL\)"
    ):
        pool.apply(die_once, str(tmp_path / "died"), retries=0)
    wait_until(lambda: pool.ids == [0, 1], REPLACE_WAIT, "the dead engine's replacement")


def test_dead_engine_comes_back_under_its_id_with_the_setup_replayed(pool: pxpool.Pool) -> None:
    pool.push({"answer": 42})
    pool.setup("import math\ntau_twice = 2 * math.tau")
    victim = pids(pool)[1]
    os.kill(victim, signal.SIGKILL)
    # replaced: registered under id 1 and done replaying (registration alone comes first)
    wait_until(
        lambda: 1 in pool.ids and not pool.core.operations.snapshot() and pids(pool)[1] != victim,
        REPLACE_WAIT,
        "engine 1's replacement",
    )
    assert pool.client[1].pull("answer", block=True) == 42
    assert pool.client[1].pull("tau_twice", block=True) == pytest.approx(4 * 3.141592653589793)
    assert pool.engine_deaths()[1] == "killed by SIGKILL"


def square_slowly(x: int) -> int:
    import time

    time.sleep(0.02)
    return x * x


def engine_processes(pool: pxpool.Pool) -> list[int]:
    """The engine processes (not their nannies) of the pool's running engine sets."""
    cluster = pool.core.cluster
    assert cluster is not None
    launchers = list(cluster.engines.values())
    return [
        p.pid for launcher in launchers for p in _launcher_processes(launcher) if p.is_running()
    ]


def test_chaos_every_result_exactly_once_while_engines_are_killed(pool: pxpool.Pool) -> None:
    """SIGKILL a random engine every second for 10 s while 500 tasks of 20 ms run
    through pool.map and 100 through a load-balanced view."""
    stop = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        rng = random.Random(7)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not stop.wait(1.0):
            running = engine_processes(pool)
            if running:
                victim = rng.choice(running)
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        view = pool.lbview()
        view.retries = 10  # ipyparallel's scheduler sends a task of a dead engine elsewhere
        submitted = [view.apply_async(square_slowly, i) for i in range(100)]
        mapped = pool.map(square_slowly, range(500), retries=10)
        viewed = [ar.get(timeout=120) for ar in submitted]
    finally:
        stop.set()
        thread.join(15)
    assert mapped == [x * x for x in range(500)]
    assert viewed == [x * x for x in range(100)]
    assert len(kills) >= 3  # fewer than 10: while both engines are being replaced, none runs
    wait_until(lambda: pool.ids == [0, 1], REPLACE_WAIT, "every killed engine's replacement")
    assert pool.map(lambda x: x + 1, range(10)) == list(range(1, 11))
