"""The task lane on real engines: pool.submit futures, the Executor, the joblib backend,
timeouts and deaths, interleaving with %%px cells, and the signed lane socket."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any
from unittest import mock

import cloudpickle
import pytest
import zmq

import pxpool
from pxpool._tasks import agent as lane_agent
from pxpool._tasks import joblib_hook, wire
from pxpool._tasks.lane import encode

from . import debug_helpers
from .debug_helpers import fails_with_local
from .waits import wait_until

pytestmark = pytest.mark.integration
# engines cannot import this test module: its functions travel by value, as a notebook's
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(debug_helpers)
RESULT_WAIT = 60.0  # seconds any single result may take here
REPLACE_WAIT = 60.0  # seconds for a dead engine's replacement


def square(x: int) -> int:
    return x * x


def wait_for_file(path: str, limit: float = 60.0) -> str:
    """On an engine: block until ``path`` exists (a barrier the test opens)."""
    import os
    import time

    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {path} not opened within {limit}s")
        time.sleep(0.005)
    return "released"


def touch(path: str) -> str:
    open(path, "a").close()
    return path


def engine_pid() -> int:
    import os

    return os.getpid()


def freeze_myself() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSTOP)


def record_run(log: str, i: int, seconds: float) -> int:
    """Append ``i`` and this engine's pid to ``log`` (one line per execution), work."""
    import os
    import time

    with open(log, "a") as handle:
        handle.write(f"{i} {os.getpid()}\n")
    time.sleep(seconds)
    return i * 10


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile(
        "local",
        engines=2,
        restart="on-failure",
        max_restarts=20,
        restart_backoff=0.1,
        max_result_size="1M",
    ) as started:
        yield started


def wait_both_engines(pool: pxpool.Pool) -> None:
    wait_until(
        lambda: pool.ids == [0, 1] and not pool.core.operations.snapshot(),
        REPLACE_WAIT,
        "both engines registered, their hooks done",
    )


# ---------------------------------------------------------------- futures


def test_ten_thousand_submits_come_back_in_order_and_correct(pool: pxpool.Pool) -> None:
    futures = [pool.submit(square, i) for i in range(10_000)]
    assert [f.result(RESULT_WAIT) for f in futures] == [i * i for i in range(10_000)]
    assert {f.engine_id for f in futures} == {0, 1}
    assert all(isinstance(f, pxpool.TaskFuture) for f in futures)


def identity(value: Any) -> Any:
    return value


def test_results_come_back_as_returned_plain_or_canned(pool: pxpool.Pool) -> None:
    import numpy as np

    plain = [None, 3, 2.5, "é", (1, "a"), [1, 2.0, None, True], list(range(63))]
    canned = [[1, [2]], {"k": (1, 2)}, b"bytes", (1, np.int64(2)), list(range(64))]
    for value in plain + canned:
        back = pool.submit(identity, value).result(RESULT_WAIT)
        assert back == value and type(back) is type(value), value
    array = pool.submit(identity, np.arange(5)).result(RESULT_WAIT)
    assert isinstance(array, np.ndarray) and array.tolist() == [0, 1, 2, 3, 4]
    assert pool.submit(lambda: lambda x: x + 1).result(RESULT_WAIT)(1) == 2  # a function


def test_futures_work_with_as_completed_wait_callbacks_and_await(pool: pxpool.Pool) -> None:
    futures = [pool.submit(square, i) for i in range(20)]
    seen: list[int] = []
    futures[0].add_done_callback(lambda f: seen.append(f.result()))
    done = sorted(f.result() for f in pxpool.as_completed(futures, timeout=RESULT_WAIT))
    assert done == sorted(i * i for i in range(20))
    finished, pending = pxpool.wait(futures, timeout=RESULT_WAIT)
    assert len(finished) == 20 and not pending
    assert seen == [0]
    assert futures[3].exception() is None

    async def awaited() -> int:
        return int(await pool.submit(square, 12))

    assert asyncio.run(asyncio.wait_for(awaited(), RESULT_WAIT)) == 144


def test_health_counts_lane_tasks(pool: pxpool.Pool) -> None:
    def done() -> int:
        return sum(s.tasks_done or 0 for s in pool.health_snapshots())

    before = done()
    futures = [pool.submit(square, i) for i in range(200)]
    for future in futures:
        future.result(RESULT_WAIT)
    wait_until(lambda: done() >= before + 200, RESULT_WAIT, "200 more tasks done in health")


def test_a_cancelled_queued_task_never_runs(pool: pxpool.Pool, tmp_path: Path) -> None:
    barrier = tmp_path / "open"
    side_effect = tmp_path / "ran"
    # more blockers than all engines hold in flight: the rest, and the victim, queue here
    blockers = [pool.submit(wait_for_file, str(barrier)) for _ in range(100)]
    victim = pool.submit(touch, str(side_effect))
    assert victim.cancel()
    assert victim.cancelled()
    barrier.touch()
    assert {b.result(RESULT_WAIT) for b in blockers} == {"released"}
    # a task queued after the victim ran: the victim's turn came and went
    assert pool.submit(touch, str(tmp_path / "after")).result(RESULT_WAIT)
    assert not side_effect.exists()
    with pytest.raises(CancelledError):
        victim.result(0)


def test_a_failing_task_names_task_and_engine_and_debugs_post_mortem(pool: pxpool.Pool) -> None:
    future = pool.submit(fails_with_local, 6)
    with pytest.raises(pxpool.TaskError) as info:
        future.result(RESULT_WAIT)
    error = info.value
    assert error.engine_id == future.engine_id
    assert error.ename == "ValueError" and "bad input 6 (42)" in error.evalue
    assert "pool.submit(fails_with_local) #" in str(error)
    assert f"failed on engine {future.engine_id}" in str(error)
    assert "fails_with_local" in error.traceback
    with pool.debug(error.engine_id) as session:
        assert session.kind == "postmortem"
        assert session.send("p secret").strip() == "42"
        assert session.send("p n").strip() == "6"
    assert pool.submit(square, 3).result(RESULT_WAIT) == 9


def test_bad_arguments_fail_where_they_are_given(pool: pxpool.Pool) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        pool.submit(square, 1, timeout=0)
    with pytest.raises(ValueError, match="retries must be a whole number"):
        pool.submit(square, 1, retries=-1)
    with pytest.raises(TypeError, match="needs a function"):
        pool.submit(42)
    with pytest.raises(pxpool.UnpicklableArgumentError, match="argument 1 of square"):
        pool.submit(square, threading.Lock())


def repeat(text: str, times: int, items: int) -> Any:
    """A string ``text * times``, or a list of ``items`` distinct strings that long."""
    return text * times if items == 0 else [f"{i}{text * times}" for i in range(items)]


def test_a_result_over_the_limit_is_refused_on_the_engine(pool: pxpool.Pool) -> None:
    with pytest.raises(pxpool.ResultTooLarge, match="larger than the limit"):
        pool.submit(bytes, 2_000_000).result(RESULT_WAIT)
    assert pool.submit(bytes, 10).result(RESULT_WAIT) == bytes(10)
    # plain values skip ipyparallel's canning (pxpool._tasks.plain): the limit holds there
    for times, items in ((2_000_000, 0), (600_000, 3)):  # 2 MB, 1.8 MB: over the 1M limit
        with pytest.raises(pxpool.ResultTooLarge, match="larger than the limit"):
            pool.submit(repeat, "x", times, items).result(RESULT_WAIT)
        assert pool.submit(repeat, "x", 10, items).result(RESULT_WAIT) == repeat("x", 10, items)


# ---------------------------------------------------------------- names


NOTEBOOK = """
import math as notebook_math
offset = 5
both = "client"

def helper(x):
    return x + offset

def uses_notebook(x):
    return helper(notebook_math.isqrt(x)) * pushed_factor

def which_both():
    return both
"""


def test_notebook_functions_use_client_imports_and_engine_names(pool: pxpool.Pool) -> None:
    notebook: dict[str, Any] = {"__name__": "__main__"}
    exec(NOTEBOOK, notebook)
    pool.push({"pushed_factor": 2, "both": "engine"})
    assert pool.submit(notebook["uses_notebook"], 49).result(RESULT_WAIT) == (7 + 5) * 2
    assert pool.submit(notebook["which_both"]).result(RESULT_WAIT) == "engine"  # engine wins
    notebook["offset"] = 100  # a changed global travels with the next submit
    assert pool.submit(notebook["uses_notebook"], 49).result(RESULT_WAIT) == (7 + 100) * 2
    pool.push({"scale": 10})
    assert pool.submit(lambda x: x * scale, 4).result(RESULT_WAIT) == 40  # noqa: F821


# ---------------------------------------------------------------- scheduling


def test_a_long_task_does_not_delay_short_ones(pool: pxpool.Pool, tmp_path: Path) -> None:
    wait_both_engines(pool)
    barrier = tmp_path / "open"
    long = pool.submit(wait_for_file, str(barrier))
    wait_until(lambda: long.running(), RESULT_WAIT, "the long task sent to an engine")
    shorts = [pool.submit(square, i) for i in range(30)]
    try:
        assert [f.result(RESULT_WAIT) for f in shorts] == [i * i for i in range(30)]
        assert not long.done()
        assert {f.engine_id for f in shorts} == {1 - long.engine_id}  # type: ignore[operator]
    finally:
        barrier.touch()
    assert long.result(RESULT_WAIT) == "released"


CELL = """
import time
_t0 = time.time()
while time.time() - _t0 < 0.01:
    pass
spans.append(("cell", _t0, time.time()))
"""


def lane_span(seconds: float) -> None:
    import time

    t0 = time.time()
    while time.time() - t0 < seconds:
        pass
    spans.append(("lane", t0, time.time()))  # noqa: F821 - an engine name


def test_lane_tasks_and_px_cells_never_overlap_on_an_engine(pool: pxpool.Pool) -> None:
    wait_both_engines(pool)
    pool.execute("spans = []")
    view = pool.client.direct_view("all")
    cells = []
    futures = []
    for _ in range(15):
        cells.append(view.execute(CELL, block=False))
        futures += [pool.submit(lane_span, 0.003) for _ in range(8)]
    for cell in cells:
        cell.get(RESULT_WAIT)
    for future in futures:
        future.result(RESULT_WAIT)
    for engine_id in pool.ids:
        spans = sorted(pool.client[engine_id].pull("spans", block=True), key=lambda s: s[1])
        kinds = {kind for kind, _, _ in spans}
        assert "lane" in kinds and "cell" in kinds, (engine_id, kinds)
        for (kind_a, _, end_a), (kind_b, start_b, _) in zip(spans, spans[1:], strict=False):
            assert end_a <= start_b, f"engine {engine_id}: {kind_a} overlaps {kind_b}"


def read_marker() -> tuple[int, int]:
    import os

    return os.getpid(), marker  # type: ignore[name-defined]  # noqa: F821 - an engine name


def test_an_engine_that_joins_runs_lane_tasks_only_after_its_setup(pool: pxpool.Pool) -> None:
    """A joining engine starts held; pushes replay on it before its lane runs a task."""
    wait_both_engines(pool)
    pool.push({"marker": 42})
    grown = threading.Thread(target=pool.scale_sync, args=(3,))
    grown.start()
    try:
        answers = []
        deadline = time.monotonic() + RESULT_WAIT
        while (grown.is_alive() or len({pid for pid, _ in answers}) < 3) and (
            time.monotonic() < deadline
        ):
            answers += [
                f.result(RESULT_WAIT) for f in [pool.submit(read_marker) for _ in range(20)]
            ]
        assert {value for _, value in answers} == {42}
        assert len({pid for pid, _ in answers}) == 3, "the new engine ran no lane task"
    finally:
        grown.join(RESULT_WAIT)
        pool.scale_sync(2)
    wait_both_engines(pool)


# ---------------------------------------------------------------- faults


def test_a_frozen_task_times_out_and_its_engine_is_replaced(pool: pxpool.Pool) -> None:
    wait_both_engines(pool)
    before = {i: pool.client[i].apply_sync(engine_pid) for i in pool.ids}
    future = pool.submit(freeze_myself, timeout=1.0)
    with pytest.raises(pxpool.TaskTimeout, match="killed and replaced") as info:
        future.result(RESULT_WAIT)
    assert info.value.action == "replaced"
    engine = info.value.engine_id
    assert engine == future.engine_id
    wait_both_engines(pool)
    assert pool.client[engine].apply_sync(engine_pid) != before[engine]
    futures = [pool.submit(square, i) for i in range(200)]
    assert [f.result(RESULT_WAIT) for f in futures] == [i * i for i in range(200)]
    assert {f.engine_id for f in futures} == {0, 1}


def test_a_python_task_past_its_timeout_is_interrupted(pool: pxpool.Pool) -> None:
    wait_both_engines(pool)
    with pytest.raises(pxpool.TaskTimeout, match="interrupted with SIGINT"):
        pool.submit(time.sleep, 30, timeout=0.5).result(RESULT_WAIT)
    assert pool.submit(square, 5, timeout=5).result(RESULT_WAIT) == 25


def test_sigkill_under_queued_tasks_resolves_each_future_once(
    pool: pxpool.Pool, tmp_path: Path
) -> None:
    wait_both_engines(pool)
    log = tmp_path / "runs"
    victim = pool.client[0].apply_sync(engine_pid)
    settled: dict[int, int] = {}
    futures = []
    for i in range(50):
        future = pool.submit(record_run, str(log), i, 0.02)
        future.add_done_callback(lambda f, i=i: settled.__setitem__(i, settled.get(i, 0) + 1))
        futures.append(future)
    wait_until(
        lambda: log.exists() and f" {victim}\n" in log.read_text(),
        RESULT_WAIT,
        "a task running on engine 0",
    )
    os.kill(victim, signal.SIGKILL)
    assert [f.result(RESULT_WAIT) for f in futures] == [i * 10 for i in range(50)]
    assert settled == {i: 1 for i in range(50)}
    runs = [line.split() for line in log.read_text().splitlines()]
    assert {int(i) for i, _ in runs} == set(range(50))  # each ran, some of them twice
    wait_both_engines(pool)


def test_without_retries_a_killed_engine_fails_its_task(pool: pxpool.Pool, tmp_path: Path) -> None:
    wait_both_engines(pool)
    before = {i: pool.client[i].apply_sync(engine_pid) for i in pool.ids}
    future = pool.submit(wait_for_file, str(tmp_path / "never"), retries=0)
    wait_until(lambda: future.running(), RESULT_WAIT, "the task sent to an engine")
    assert future.engine_id is not None
    os.kill(before[future.engine_id], signal.SIGKILL)
    with pytest.raises(pxpool.EngineDied, match=r"died while running it") as info:
        future.result(RESULT_WAIT)
    assert not isinstance(info.value, pxpool.TaskLost)
    wait_both_engines(pool)


# ---------------------------------------------------------------- executor and joblib


def test_executor_submit_map_chunks_timeout_and_shutdown(pool: pxpool.Pool, tmp_path: Path) -> None:
    with pool.executor() as executor:
        assert executor.submit(square, 7).result(RESULT_WAIT) == 49
        assert list(executor.map(square, range(50))) == [i * i for i in range(50)]
        assert list(executor.map(pow, range(30), [2] * 30, chunksize=7)) == [
            i**2 for i in range(30)
        ]
        with pytest.raises(TimeoutError):
            list(executor.map(time.sleep, [1.0], timeout=0.2))
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)
    barrier = tmp_path / "open"
    executor = pool.executor()
    blockers = [executor.submit(wait_for_file, str(barrier)) for _ in range(100)]
    queued = executor.submit(touch, str(tmp_path / "queued"))
    executor.shutdown(wait=False, cancel_futures=True)
    barrier.touch()
    assert queued.cancelled()
    for blocker in blockers:
        if not blocker.cancelled():
            assert blocker.result(RESULT_WAIT) == "released"
    assert pool.submit(touch, str(tmp_path / "after")).result(RESULT_WAIT)
    assert not (tmp_path / "queued").exists()


def test_executor_map_fails_only_the_call_whose_argument_cannot_be_pickled(
    pool: pxpool.Pool,
) -> None:
    """map pickles its function at once (an unpicklable one fails the call of map) and
    each call's arguments as the call is sent: a lock among the items fails its own
    call, named, when the iteration reaches it; the calls around it run."""
    lock = threading.Lock()
    items: list[Any] = [1, 2, lock, 4]
    with pool.executor() as executor:
        with pytest.raises(pxpool.UnpicklableFunctionError):
            executor.map(lambda x: (x, lock), [1])
        results = executor.map(square, items)
        assert [next(results), next(results)] == [1, 4]
        with pytest.raises(pxpool.UnpicklableArgumentError, match="argument 1 of square"):
            next(results)
        futures = [executor.submit(square, i) for i in (5, 6)]
        assert [f.result(RESULT_WAIT) for f in futures] == [25, 36]  # the lane goes on
        assert list(executor.map(square, range(300))) == [i * i for i in range(300)]


def test_a_large_executor_map_hands_its_first_calls_over_before_queueing_the_rest(
    pool: pxpool.Pool,
) -> None:
    """Queueing thousands of calls holds the GIL, which the lane's thread would get
    only every switch interval: map's first batch waits (briefly) until the thread has
    sent it, so engines start at once. Checked where map queues: right after the first
    batch is added, some of its tasks have been sent."""
    wait_both_engines(pool)
    assert pool.submit(square, 2).result(RESULT_WAIT) == 4  # the lane knows both engines
    lane = pool._lane  # noqa: SLF001 - the seam under executor().map
    seen: list[int] = []
    dispatcher = lane.dispatcher()
    original = dispatcher.add

    def add(*tasks: Any, hand_over: float = 0.0) -> None:
        original(*tasks, hand_over=hand_over)
        if hand_over:
            seen.append(sum(task.sent > 0 for task in tasks))

    dispatcher.add = add  # type: ignore[method-assign]
    try:
        with pool.executor() as executor:
            assert list(executor.map(square, range(1000))) == [i * i for i in range(1000)]
    finally:
        del dispatcher.add
    assert len(seen) == 1 and seen[0] > 0, f"sent when the first batch was added: {seen}"


class SlowToPickle:
    """An argument whose pickling waits for ``release`` (as a large one's takes long)."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        self.entered, self.release = entered, release

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        self.entered.set()
        assert self.release.wait(RESULT_WAIT), "the test never released the pickling"
        return (int, (0,))


def test_an_executor_submit_that_pickles_slowly_holds_up_no_result(
    pool: pxpool.Pool, tmp_path: Path
) -> None:
    """Results are settled on the lane's thread, where the executor forgets each finished
    future: that must not wait for a submit of the same executor still pickling."""
    wait_both_engines(pool)
    barrier = tmp_path / "open"
    entered, release = threading.Event(), threading.Event()
    with pool.executor() as executor:
        first = executor.submit(wait_for_file, str(barrier))
        wait_until(first.running, RESULT_WAIT, "the first task sent to an engine")
        slow = threading.Thread(
            target=executor.submit, args=(square, SlowToPickle(entered, release))
        )
        slow.start()
        try:
            assert entered.wait(RESULT_WAIT)
            barrier.touch()
            assert first.result(RESULT_WAIT) == "released"
            # the lane's thread has run first's callbacks and goes on settling others
            assert pool.submit(square, 3).result(30) == 9
        finally:
            release.set()
            slow.join(RESULT_WAIT)


JOBLIB_NOTEBOOK = """
import math
def tiny(i):
    return math.isqrt(i) + i
"""


def test_joblib_backend_runs_main_functions_also_as_a_generator(pool: pxpool.Pool) -> None:
    joblib = pytest.importorskip("joblib")
    notebook: dict[str, Any] = {"__name__": "__main__"}
    exec(JOBLIB_NOTEBOOK, notebook)
    tiny = notebook["tiny"]
    expected = [tiny(i) for i in range(300)]
    with joblib.parallel_config(backend="pxpool"):
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(tiny)(i) for i in range(300)) == expected
        lazy = joblib.Parallel(n_jobs=2, return_as="generator")(
            joblib.delayed(tiny)(i) for i in range(300)
        )
        assert list(lazy) == expected
        unordered = joblib.Parallel(n_jobs=2, return_as="generator_unordered")(
            joblib.delayed(tiny)(i) for i in range(300)
        )
        assert sorted(unordered) == sorted(expected)
        with pytest.raises(pxpool.TaskError, match="ZeroDivisionError"):
            joblib.Parallel(n_jobs=-1)(joblib.delayed(divmod)(1, i) for i in [1, 0, 2])
        with pytest.raises(pxpool.TaskError, match="ZeroDivisionError"):
            failing = joblib.Parallel(n_jobs=2, return_as="generator_unordered")(
                joblib.delayed(divmod)(1, i) for i in [1, 0, 2]
            )
            list(failing)
    pool.register_joblib()  # bound to this pool, whichever is current
    try:
        with joblib.parallel_config(backend="pxpool", n_jobs=-1):
            assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(10)) == [
                i * i for i in range(10)
            ]
    finally:
        joblib_hook.register()  # back to the current pool


def test_joblib_takes_ordered_results_as_they_come_and_keeps_its_timeout(
    pool: pxpool.Pool,
) -> None:
    """Results in order are waited for on their futures (no 10 ms polling), results in
    completion order through joblib's callback; ``Parallel(timeout=)`` holds both ways."""
    import joblib

    from pxpool._tasks.joblib_backend import PxpoolBackend

    modes: dict[str, bool] = {}
    configure = PxpoolBackend.configure

    def noted(backend: PxpoolBackend, *args: Any, **kwargs: Any) -> int:
        n_jobs = configure(backend, *args, **kwargs)
        modes[kwargs["parallel"].return_as] = backend.supports_retrieve_callback
        return n_jobs

    with (
        joblib.parallel_config(backend="pxpool"),
        mock.patch.object(PxpoolBackend, "configure", noted),
    ):
        for return_as in ("list", "generator", "generator_unordered"):
            out = joblib.Parallel(n_jobs=2, return_as=return_as)(
                joblib.delayed(square)(i) for i in range(50)
            )
            assert sorted(out) == [i * i for i in range(50)]
        for return_as in ("list", "generator_unordered"):
            with pytest.raises(multiprocessing.TimeoutError):  # as joblib raises it
                list(
                    joblib.Parallel(n_jobs=2, timeout=0.2, return_as=return_as)(
                        joblib.delayed(time.sleep)(s) for s in (1.5, 0.0)
                    )
                )
    assert modes == {"list": False, "generator": False, "generator_unordered": True}
    assert pool.submit(square, 4).result(RESULT_WAIT) == 16  # the lane goes on


def scored_where(estimator: Any, features: Any, labels: Any) -> float:
    """A scikit-learn scorer whose score is the pid of the process that scored."""
    import os

    return float(os.getpid())


def test_scikit_learn_n_jobs_fits_on_the_engines_with_the_results_of_a_serial_search(
    pool: pxpool.Pool,
) -> None:
    import joblib
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    features, labels = make_classification(n_samples=200, n_features=8, random_state=0)
    grid, folds = {"C": [0.01, 0.1, 1.0, 10.0]}, 3

    def search(n_jobs: int, **options: Any) -> Any:
        model = LogisticRegression(max_iter=300)
        return GridSearchCV(model, grid, cv=folds, n_jobs=n_jobs, **options).fit(features, labels)

    def scored_in(found: Any) -> set[int]:
        scores = [found.cv_results_[f"split{k}_test_score"] for k in range(folds)]
        return {int(score) for fold in scores for score in fold}

    serial = search(1)
    assert scored_in(search(1, scoring=scored_where, refit=False)) == {os.getpid()}  # control
    with joblib.parallel_config(backend="pxpool"):
        parallel = search(2)
        where = scored_in(search(2, scoring=scored_where, refit=False))
    assert np.allclose(
        parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )
    assert parallel.best_params_ == serial.best_params_
    engines = {pool.client[i].apply_sync(engine_pid) for i in pool.ids}
    assert where and where <= engines, (where, engines)


# ---------------------------------------------------------------- the signed socket


def _lane_socket(pool: pxpool.Pool, engine_id: int) -> zmq.Socket[bytes]:
    answer = pool.client[engine_id].apply_sync(lane_agent.install, pool.core.controller_ip())
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(answer["address"])
    return sock


def _run_message(signer: wire.FrameSigner, token: str, seq: int, f: Any, *args: Any) -> list[Any]:
    parts, na, nk = encode(f, args, {})
    header = {"op": wire.RUN, "c": token, "q": seq, "tasks": [[seq, seq, na, nk, 0]]}
    return wire.pack(signer, header, parts)


def _reply(sock: zmq.Socket[bytes], signer: wire.FrameSigner) -> dict[str, Any]:
    assert sock.poll(int(RESULT_WAIT * 1000)), "no reply from the engine"
    unpacked = wire.unpack(signer, sock.recv_multipart())
    assert not isinstance(unpacked, str), unpacked
    return unpacked[0]


def test_unsigned_and_wrongly_signed_messages_run_nothing(
    pool: pxpool.Pool, tmp_path: Path
) -> None:
    wait_both_engines(pool)
    right = wire.FrameSigner(pool.client.session.key)
    wrong = wire.FrameSigner(b"not the pool's key")
    sock = _lane_socket(pool, 0)
    try:
        forged = tmp_path / "forged"
        unsigned = _run_message(right, "attacker", 1, touch, str(forged))
        unsigned[0] = b"0" * 64 + bytes(unsigned[0])[64:]  # signature replaced
        sock.send_multipart(unsigned)
        sock.send_multipart(_run_message(wrong, "attacker", 2, touch, str(forged)))
        # barrier: a correctly signed task sent after them has run and answered
        barrier = tmp_path / "barrier"
        sock.send_multipart(_run_message(right, "tester", 1, touch, str(barrier)))
        assert _reply(sock, right)["r"][0][1] == wire.PLAIN  # ran: touch returns a str
        assert barrier.exists() and not forged.exists()
        # positive control: the same message, signed with the pool's key, runs
        signed = _run_message(right, "tester", 2, touch, str(forged))
        sock.send_multipart(signed)
        assert _reply(sock, right)["r"][0][1] == wire.PLAIN  # ran: touch returns a str
        assert forged.exists()
        # and replaying it (a recorded message) runs nothing
        forged.unlink()
        sock.send_multipart(signed)
        sock.send_multipart(_run_message(right, "tester", 3, touch, str(barrier)))
        assert _reply(sock, right)["r"][0][1] == wire.PLAIN  # ran: touch returns a str
        assert not forged.exists()
    finally:
        sock.close(linger=0)
    counts = pool.client[0].apply_sync(lane_agent.counts)
    assert counts["refused"] >= 3


def spin_until(path: str, limit: float = 60.0) -> str:
    """On an engine: keep the interpreter busy (holding the GIL but for its switches)
    until ``path`` exists, a long task that never sleeps."""
    import os
    import time

    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {path} not opened within {limit}s")
        sum(range(2000))
    return "released"


def test_replies_of_tiny_tasks_travel_together(pool: pxpool.Pool) -> None:
    wait_both_engines(pool)
    before = [pool.client[i].apply_sync(lane_agent.counts) for i in (0, 1)]
    futures = [pool.submit(square, i) for i in range(3000)]
    assert [f.result(RESULT_WAIT) for f in futures] == [i * i for i in range(3000)]
    after = [pool.client[i].apply_sync(lane_agent.counts) for i in (0, 1)]
    ran = sum(a["ran"] - b["ran"] for a, b in zip(after, before, strict=True))
    replies = sum(a["replies"] - b["replies"] for a, b in zip(after, before, strict=True))
    assert ran >= 3000
    assert replies <= ran / 3, f"{replies} reply messages for {ran} tiny tasks"


def fill_in_place(array: Any, value: int, nap: float = 0.0) -> Any:
    if nap:
        time.sleep(nap)
    array[:] = value
    return array


def lane_counts(pool: pxpool.Pool, name: str) -> int:
    return sum(pool.client[i].apply_sync(lane_agent.counts)[name] for i in (0, 1))


@pytest.mark.parametrize(("nap", "count"), [(0.0, "held"), (0.001, "handed")])
def test_a_reply_that_leaves_later_keeps_the_result_its_task_returned(
    pool: pxpool.Pool, nap: float, count: str
) -> None:
    """A tiny task's reply waits for the next task's; that of a task that mostly
    waited leaves from the outbox's thread while the next runs. A result may be a view
    of engine state (a pushed array filled in place, serialized without a copy): the
    next task's change must not reach it. Positive control: replies took that way."""
    import numpy as np

    wait_both_engines(pool)
    pool.push({"shared": np.zeros(4096)})
    n = 2000 if not nap else 400
    before = lane_counts(pool, count)
    futures = [pool.submit(lambda i: fill_in_place(shared, i, nap), i) for i in range(n)]  # noqa: F821
    results = [f.result(RESULT_WAIT) for f in futures]
    assert lane_counts(pool, count) > before, f"no reply {count}: the case was not exercised"
    wrong = [i for i, got in enumerate(results) if not (got == i).all()]
    assert not wrong, f"{len(wrong)} of {n} results show a later task's values, e.g. {wrong[:5]}"


def test_a_finished_reply_is_not_held_behind_a_long_task(pool: pxpool.Pool, tmp_path: Path) -> None:
    """Two tasks in one run message: the first is tiny, so its reply waits for the
    next task's; the next one is long and never sleeps, and the first result still
    comes while it runs (the outbox's watch sends it)."""
    wait_both_engines(pool)
    signer = wire.FrameSigner(pool.client.session.key)
    sock = _lane_socket(pool, 0)
    try:
        sock.send_multipart(_run_message(signer, "holder", 1, square, 3))  # warm: cached
        assert _reply(sock, signer)["r"][0][1] == wire.PLAIN
        for attempt in range(2, 7):  # a busy machine may make the tiny task not tiny
            held = pool.client[0].apply_sync(lane_agent.counts)["held"]
            barrier = tmp_path / f"open-{attempt}"
            short_parts, na, nk = encode(square, (7,), {})
            long_parts, lna, lnk = encode(spin_until, (str(barrier),), {})
            tasks = [[1, 1, na, nk, 0], [2, 2, lna, lnk, 0]]
            header = {"op": wire.RUN, "c": "holder", "q": attempt, "tasks": tasks}
            sock.send_multipart(wire.pack(signer, header, [*short_parts, *long_parts]))
            first = _reply(sock, signer)
            assert [entry[0] for entry in first["r"]] == [1], "the short result waited"
            assert not barrier.exists()
            barrier.touch()
            second = _reply(sock, signer)
            assert [entry[:2] for entry in second["r"]] == [[2, wire.PLAIN]]
            if pool.client[0].apply_sync(lane_agent.counts)["held"] > held:
                return  # the short reply was held, and came while the long task ran
        pytest.fail("the tiny task's reply was never held: the case was not exercised")
    finally:
        sock.close(linger=0)


def _handshake(sock: zmq.Socket[bytes], monitor: zmq.Socket[bytes]) -> int:
    """The first CurveZMQ handshake event of ``sock``'s connection (bounded wait)."""
    import zmq.utils.monitor

    done = {
        zmq.EVENT_HANDSHAKE_SUCCEEDED,
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
        zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    }
    deadline = time.monotonic() + RESULT_WAIT
    while (left := deadline - time.monotonic()) > 0:
        if monitor.poll(int(left * 1000) + 1):
            event = int(zmq.utils.monitor.recv_monitor_message(monitor)["event"])
            if event in done:
                return event
    raise AssertionError(f"no handshake event within {RESULT_WAIT:g}s")


def test_an_encrypted_pool_encrypts_the_lane(tmp_path: Path) -> None:
    """With encrypt = true the lane is CurveZMQ too: tasks run; a plaintext socket's
    handshake is refused, so its correctly signed task never runs; the same message
    over CurveZMQ with the engine's key runs (the positive control)."""
    with pxpool.Pool.from_profile("local", engines=1, encrypt=True) as pool:
        assert pool.submit(square, 3).result(RESULT_WAIT) == 9
        assert pool.apply(square, 4) == 16
        answer = pool.client[0].apply_sync(lane_agent.install, pool.core.controller_ip(), True)
        assert answer["curve_key"], answer
        right = wire.FrameSigner(pool.client.session.key)
        forged = tmp_path / "sent-in-plaintext"
        message = _run_message(right, "tester", 1, touch, str(forged))
        context = zmq.Context.instance()
        plain, curved = context.socket(zmq.DEALER), context.socket(zmq.DEALER)
        monitors = [plain.get_monitor_socket(), curved.get_monitor_socket()]
        try:
            plain.setsockopt(zmq.LINGER, 0)
            plain.connect(answer["address"])
            plain.send_multipart(message)
            assert _handshake(plain, monitors[0]) != zmq.EVENT_HANDSHAKE_SUCCEEDED
            curved.setsockopt(zmq.LINGER, 0)
            wire.connect_encrypted(curved, answer["curve_key"], zmq.curve_keypair())
            curved.connect(answer["address"])
            assert _handshake(curved, monitors[1]) == zmq.EVENT_HANDSHAKE_SUCCEEDED
            assert not forged.exists()
            curved.send_multipart(_run_message(right, "tester", 1, touch, str(forged)))
            assert _reply(curved, right)["r"][0][1] == wire.PLAIN
            assert forged.exists()
        finally:
            for sock in (plain, curved):
                sock.disable_monitor()
                sock.close(linger=0)
            for monitor in monitors:
                monitor.close(linger=0)


# ---------------------------------------------------------------- the pool's life


def test_stopping_the_pool_fails_unfinished_tasks_and_a_restart_serves_again(
    tmp_path: Path,
) -> None:
    small = pxpool.Pool.from_profile("local", engines=1)
    small.start_sync()
    try:
        running = small.submit(wait_for_file, str(tmp_path / "never"))
        queued = [small.submit(square, i) for i in range(5)]
        wait_until(lambda: running.running(), RESULT_WAIT, "the first task sent")
        small.stop_sync()
        for future in [running, *queued]:
            with pytest.raises(pxpool.PoolStateError, match="stopped before the task finished"):
                future.result(RESULT_WAIT)
        with pytest.raises(pxpool.PoolStateError):
            small.submit(square, 1)
        small.start_sync()
        assert small.submit(square, 9).result(RESULT_WAIT) == 81
    finally:
        small.stop_sync()
