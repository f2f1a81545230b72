"""A real local pool: start, apply, push/pull, scale, restart, stop."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import pxpool
from pxpool._core import runtime

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as running:
        yield running


def test_started_pool_has_requested_engines_and_is_current(pool: pxpool.Pool) -> None:
    assert pool.ids == [0, 1]
    assert pool.engines == 2
    assert pxpool.current() is pool
    assert pool.state == "running"


def test_apply_runs_on_an_engine_not_here(pool: pxpool.Pool) -> None:
    pid = pool.apply(os.getpid)
    assert pid != os.getpid()
    assert pool.apply(lambda a, b=1: a * b, 6, b=7) == 42


def test_push_then_pull_round_trips_per_engine(pool: pxpool.Pool) -> None:
    pool.push({"answer": 42, "name": "pxpool"})
    assert pool.pull("answer") == [42, 42]
    assert pool.pull("name", targets=1) == "pxpool"
    assert pool.pull(["answer", "name"], targets=0) == [42, "pxpool"]


def test_views_reach_all_engines(pool: pxpool.Pool) -> None:
    pids = pool.view().apply_sync(os.getpid)
    assert len(set(pids)) == 2
    assert sorted(pool.lbview().map_sync(lambda x: x * x, range(10))) == [x * x for x in range(10)]


def test_execute_runs_code_on_every_engine(pool: pxpool.Pool) -> None:
    pool.execute("executed_here = 3 * 3")
    assert pool.pull("executed_here") == [9, 9]


def test_view_with_unknown_target_names_valid_ids(pool: pxpool.Pool) -> None:
    with pytest.raises(
        pxpool.EngineNotFoundError, match=r"No engine 7 in this pool; engines: \[0, 1\]"
    ):
        pool.view(7)


def test_engine_environment_comes_from_profile(pool: pxpool.Pool) -> None:
    assert pool.apply(lambda: __import__("os").environ.get("OMP_NUM_THREADS")) == "1"


def test_connection_files_are_private(pool: pxpool.Pool) -> None:
    directory = runtime.pool_dir(pool.name)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list((directory / "security").glob("*.json")) + [directory / "pool.json"]
    assert len(files) >= 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_controller_listens_on_loopback_only(pool: pxpool.Pool) -> None:
    controller = psutil.Process(pool.core.cluster.controller.pid)
    addresses = {
        c.laddr.ip
        for p in [controller, *controller.children(recursive=True)]
        for c in p.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert addresses == {"127.0.0.1"}


def test_the_controller_runs_without_ipythons_terminal(pool: pxpool.Pool) -> None:
    """Started through pxpool._entry.controller_main, which skips IPython's terminal imports."""
    controller = psutil.Process(pool.core.cluster.controller.pid)
    assert "pxpool._entry.controller_main" in controller.cmdline()
    probe = (
        "import sys; from pxpool._entry.lean_imports import skip_terminal; skip_terminal(); "
        "import ipyparallel.controller.app, IPython; "
        "print(sorted({'prompt_toolkit', 'jedi'} & set(sys.modules)))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.strip() == "[]"


def test_scale_up_and_down_then_restart_keeps_the_id() -> None:
    with pxpool.Pool.from_profile("local", engines=1) as pool:
        assert pool.scale_sync(3) == [0, 1, 2]
        assert sorted(pool.view().apply_sync(os.getpid)) == sorted(
            set(pool.view().apply_sync(os.getpid))
        )
        old_pid = pool.view(1).apply_sync(os.getpid)
        assert pool.restart_sync(1) == 1
        assert pool.ids == [0, 1, 2]
        new_pid = pool.view(1).apply_sync(os.getpid)
        assert new_pid != old_pid and not psutil.pid_exists(old_pid)
        assert pool.scale_sync(1) == [0]
        assert pool.apply(lambda: "still works") == "still works"
    assert pool.state == "stopped"


def test_restart_unknown_engine_lists_engines() -> None:
    with pxpool.Pool.from_profile("local", engines=1) as pool:
        with pytest.raises(
            pxpool.EngineNotFoundError, match=r"No engine 5 in this pool; engines: \[0\]"
        ):
            pool.restart_sync(5)


def test_stop_removes_runtime_dir_and_is_idempotent() -> None:
    pool = pxpool.Pool.from_profile("local", engines=1)
    pool.start_sync()
    directory = runtime.pool_dir(pool.name)
    assert directory.is_dir()
    pool.stop_sync()
    pool.stop_sync()
    assert not directory.exists()
    with pytest.raises(pxpool.PoolStateError, match="call `pool.start_sync\\(\\)`"):
        pool.apply(os.getpid)
    with pytest.raises(pxpool.PoolStateError, match="No running pool in this process"):
        pxpool.current()


def test_async_start_and_stop_in_a_running_loop() -> None:
    async def use_pool() -> pxpool.Pool:
        async with pxpool.Pool.from_profile("local", engines=1) as pool:
            assert pool.ids == [0]
            assert await pool.scale(2) == [0, 1]
            # a _sync twin still works while this thread runs an event loop
            assert pool.scale_sync(1) == [0]
        return pool

    assert asyncio.run(use_pool()).state == "stopped"


def test_sync_twin_of_unknown_method_is_an_attribute_error() -> None:
    pool = pxpool.Pool.from_profile("local", engines=1)
    with pytest.raises(AttributeError, match="no attribute 'frobnicate_sync'"):
        pool.frobnicate_sync()


# ------------------------------------------------------------ start failures


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


def test_engine_command_that_exits_fails_fast_with_its_output(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, 'echo "this interpreter is broken" >&2; exit 3')
    pool = pxpool.Pool.from_profile("local", engines=2, python=python, start_timeout=30)
    with pytest.raises(
        pxpool.EngineStartError, match=r"(?s)exited before registering.*this interpreter is broken"
    ) as info:
        pool.start_sync()
    assert "this interpreter is broken" in info.value.output
    assert pool.state == "failed"


def test_missing_engine_python_names_the_command(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-python")
    pool = pxpool.Pool.from_profile("local", engines=1, python=missing)
    with pytest.raises(
        pxpool.EngineStartError, match=r"Could not run the engine command '.*no-such-python'"
    ):
        pool.start_sync()


def test_engines_that_never_register_time_out_and_are_cleaned_up(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, 'echo "waiting forever"; exec sleep 600')
    pool = pxpool.Pool.from_profile("local", engines=2, python=python)
    with pytest.raises(
        pxpool.EngineStartError, match=r"0 of 2 engines registered within 2s; missing: \[0, 1\]"
    ):
        pool.start_sync(timeout=2)
    # the leak check of this test proves the sleeping "engines" were stopped


def test_taken_controller_port_reports_the_controller_output() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pool = pxpool.Pool.from_profile("local", engines=1, controller_port=port)
        with pytest.raises(
            pxpool.ControllerStartError,
            match=r"(?s)controller.*exited while starting.*Address already in use",
        ):
            pool.start_sync()


def test_second_pool_with_a_running_name_is_refused() -> None:
    with pxpool.Pool.from_profile("local", engines=1, pool_name="same") as first:
        second = pxpool.Pool.from_profile("local", engines=1, pool_name="same")
        with pytest.raises(pxpool.PoolStateError, match="A pool named 'same' is already running"):
            second.start_sync()
        assert first.apply(lambda: 1) == 1


def test_engine_hooks_see_every_engine_that_joins() -> None:
    seen: list[list[int]] = []
    with pxpool.Pool.from_profile("local", engines=1) as pool:
        pool.add_engine_hook(lambda p, ids: seen.append(sorted(ids)))
        assert seen == [[0]]  # engines already running are reported at once
        pool.scale_sync(2)
        pool.restart_sync(0)
        assert seen == [[0], [1], [0]]


def test_engines_join_before_the_first_heartbeat() -> None:
    """ipyparallel finishes a registration only at the beat after a new heart first
    answered: with a 10 s beat, 10-20 s after the start. The controller pings a heart
    that just connected and reports it when it answers."""
    began = time.monotonic()
    with pxpool.Pool.from_profile("local", engines=2, heartbeat_ms=10_000) as pool:
        assert pool.ids == [0, 1]
        assert len(set(pool.view().apply_sync(os.getpid))) == 2
        assert time.monotonic() - began < 8  # before the hub's first beat
        pool.scale_sync(3)  # and so do engines that join a running pool
        assert time.monotonic() - began < 9
