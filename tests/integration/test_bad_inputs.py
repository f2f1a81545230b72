"""Bad inputs, one table: each gives a clear error within a bounded time, and the pool
still answers afterwards.

Every case is ``(call, expected error, message pattern)``; the call gets the shared
two-engine pool. Errors are pxpool's own, except where another type is the contract:
an exception raised by the function inside ``pool.apply`` reaches the caller as
ipyparallel's ``RemoteError`` (with the engine's traceback), as it does from a view.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipyparallel as ipp
import pytest

import pxpool
from pxpool._core import runtime

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CASE_SECONDS = 15.0  # no case may take longer: a hang is a failure, not a slow pass


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2, max_result_size="16M") as started:
        yield started


def _closing_over_a_lock() -> Callable[[], bool]:
    lock = threading.Lock()
    return lambda: lock.locked()


def _generated(count: int, pulled: list[float]) -> Iterator[int]:
    for i in range(count):
        pulled.append(time.monotonic())
        yield i


def _map_reads_a_generator_lazily(pool: pxpool.Pool) -> None:
    pulled: list[float] = []
    out = pool.map(_sleepy_square, _generated(60, pulled))
    assert out == [i * i for i in range(60)]
    # two chunks per engine in flight: the last items are read after work was done
    assert pulled[-1] - pulled[0] > 0.1


def _sleepy_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def _stale_record(pool: pxpool.Pool) -> None:
    """A pool whose record and cluster file point at a controller that has exited."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    directory = runtime.pool_dir("stale-bad", create=True)
    cluster_file = directory / "cluster.json"
    cluster_file.write_text(json.dumps({"controller": {"state": {"pid": dead.pid}}}))
    runtime.write_private_json(
        directory / runtime.RECORD_FILE,
        {
            "name": "stale-bad",
            "profile": "local",
            "provider": "local",
            "cluster_file": str(cluster_file),
        },
    )
    try:
        pxpool.Pool.attach("stale-bad")
    finally:
        pxpool.Pool.stop_by_name("stale-bad")  # the step the message names works
        assert "stale-bad" not in runtime.record_names()


CASES: list[tuple[str, Callable[[pxpool.Pool], Any], type[BaseException], str]] = [
    (
        "apply-unpicklable-function",
        lambda p: p.apply(_closing_over_a_lock()),
        pxpool.UnpicklableFunctionError,
        r"pool.apply cannot send function '_closing_over_a_lock.<locals>.<lambda>' .*"
        r"cannot pickle '_thread.lock'.* sent with cloudpickle",
    ),
    (
        "map-unpicklable-function",
        lambda p: p.map(_closing_over_a_lock(), [1, 2]),
        pxpool.UnpicklableFunctionError,
        r"pool.map cannot send function .*<lambda>.*cannot pickle '_thread.lock'",
    ),
    (
        "apply-unpicklable-argument",
        lambda p: p.apply(abs, threading.Lock()),
        pxpool.UnpicklableArgumentError,
        r"cannot send argument 1 of abs \(a lock\) to the engines: TypeError: cannot pickle",
    ),
    (
        "apply-unpicklable-keyword",
        lambda p: p.apply(dict, guard=threading.Lock()),
        pxpool.UnpicklableArgumentError,
        r"cannot send keyword argument 'guard' of dict \(a lock\)",
    ),
    (
        "map-unpicklable-item",
        lambda p: p.map(str, [1, 2, threading.Lock()]),
        pxpool.UnpicklableArgumentError,
        r"cannot send item 2 of pool.map \(a lock\)",
    ),
    (
        "pull-undefined-name",
        lambda p: p.pull("no_such_name"),
        pxpool.EngineNameError,
        r"pool.pull: 'no_such_name' not defined on engine\(s\) \[\d\]. Set it first with `pool.push",
    ),
    (
        "target-out-of-range",
        lambda p: p.pull("x", targets=[0, 99]),
        pxpool.EngineNotFoundError,
        r"No engine 99 in this pool; engines: \[0, 1\]",
    ),
    (
        "view-target-out-of-range",
        lambda p: p.view(7),
        pxpool.EngineNotFoundError,
        r"No engine 7 in this pool",
    ),
    ("map-over-a-generator", _map_reads_a_generator_lazily, type(None), ""),
    (
        "map-function-calls-sys-exit",
        lambda p: p.map(sys.exit, [0, 1]),
        pxpool.MapError,
        r"pool.map: exit failed on engine \d for item \d: SystemExit",
    ),
    (
        # the contract of pool.apply: f's own exception arrives as a RemoteError
        "apply-function-calls-sys-exit",
        lambda p: p.apply(sys.exit, 3),
        ipp.RemoteError,
        r"SystemExit: 3",
    ),
    (
        "negative-engine-count",
        lambda p: pxpool.Pool.from_profile("local", engines=-2),
        pxpool.ProfileValidationError,
        r"engines: must be >= 0; got -2",
    ),
    (
        # the documented contract of scale: a ValueError for a count below zero
        "scale-to-negative",
        lambda p: p.scale_sync(-1),
        ValueError,
        r"scale\(n\) needs n >= 0; got -1",
    ),
    (
        "walltime-in-words",
        lambda p: pxpool.load_profile("slurm", walltime="90 minutes"),
        pxpool.ProfileValidationError,
        r"walltime: cannot read walltime '90 minutes'; write 'HH:MM:SS' .* '01:30:00'",
    ),
    (
        "result-over-the-configured-limit",
        lambda p: p.apply(bytes, 64 * 1024**2),
        pxpool.ResultTooLarge,
        r"The result of a task on engine \d is 64.0 MiB \(\d+ bytes\) serialised, larger than "
        r"the limit of 16.0 MiB \(16777216 bytes\) set by \[engine\] max_result_size = '16M' "
        r"in profile 'local'; it was not sent .* raise max_result_size in the profile",
    ),
    (
        "result-over-the-limit-from-a-view",
        lambda p: p.view().apply_sync(bytes, 20 * 1024**2),
        ipp.CompositeError,
        r"(?s)raised in: bytes.*\[0:apply\]ResultTooLarge: The result of a task on engine 0",
    ),
    (
        "map-result-over-the-limit",
        lambda p: p.map(bytes, [20 * 1024**2, 1]),
        pxpool.MapError,
        r"pool.map: bytes failed on engine \d for one of items 0..0: ResultTooLarge: .* larger "
        r"than the limit of 16.0 MiB",
    ),
    (
        "stale-connection-file",
        _stale_record,
        pxpool.PoolStateError,
        r"Pool 'stale-bad' is not running any more .* `pxpool stop stale-bad`",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gives_a_clear_error_and_the_pool_keeps_working(
    pool: pxpool.Pool, call: Callable[[pxpool.Pool], Any], error: type[BaseException], pattern: str
) -> None:
    started = time.monotonic()
    if error is type(None):
        call(pool)
    else:
        with pytest.raises(error, match=pattern):
            call(pool)
    assert time.monotonic() - started < CASE_SECONDS
    assert pool.view().apply_sync(lambda: 1) == [1, 1]
    assert pool.ids == [0, 1]


def test_engine_whose_pythonpath_breaks_an_import_is_named(tmp_path: Path) -> None:
    (tmp_path / "numpy.py").write_text("def broken(:\n")  # a stray numpy.py shadows numpy
    broken = pxpool.Pool.from_profile("local", engines=1, env={"PYTHONPATH": str(tmp_path)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        broken.start_sync()
    try:
        lines = [str(w.message) for w in caught if w.category is pxpool.EnvironmentMismatchWarning]
        assert any(
            "engine 0 cannot import pxpool (SyntaxError: invalid syntax (numpy.py, line 1))" in line
            for line in lines
        ), lines
        with pytest.raises(
            ipp.RemoteError, match=r"SyntaxError: invalid syntax \(numpy.py, line 1\)"
        ):
            broken.apply(_import_numpy)
        assert broken.apply(abs, -3) == 3  # the engine still runs what does not need numpy
    finally:
        broken.stop_sync()


def _import_numpy() -> str:
    import numpy

    return str(numpy.__version__)
