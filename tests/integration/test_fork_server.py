"""Engines forked from a preloaded fork server per host (``[engine] fork_server``).

The shared provider suite runs on local engines with the fork server (the default, in
``test_provider_local.py``) and, here, without it. The rest: a server killed while
the pool runs takes no engine with it and the next scale still works; a module in
``preload`` that does not import fails the start naming it; the server holds no
thread and no zmq context, so a forked engine's first apply works; engines share the
preloaded modules and draw different random numbers.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import pxpool
from pxpool.errors import EngineStartError

from .batch_helpers import SLURM_PARTITION, need, slurm_jobs
from .provider_suite import ProviderSuite
from .waits import wait_until

pytestmark = pytest.mark.integration


class TestLocalProviderExec(ProviderSuite):
    """The shared suite with every engine started as a process of its own."""

    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        return ("local", {"fork_server": False})

    def test_engines_are_not_forked(self, pool: pxpool.Pool) -> None:
        cmdlines = [psutil.Process(pid).cmdline() for pid in pool.view().apply_sync(os.getpid)]
        assert all("pxpool._entry.engine_main" in line for line in cmdlines), cmdlines
        assert all("pxpool._entry.forkserver.server" not in line for line in cmdlines)


def _server(pool: pxpool.Pool) -> psutil.Process:
    forks = pool.core.provider.forks  # type: ignore[attr-defined]
    assert forks.server is not None, "the pool started no fork server"
    return psutil.Process(forks.server.process.pid)


def _state() -> dict[str, Any]:
    import os
    import sys

    preloaded = "numpy.random" in sys.modules  # before this function imports it
    import numpy.random

    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "numpy": preloaded,
        "draw": float(numpy.random.rand()),
    }


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    pool = pxpool.Pool.from_profile("local", engines=2, preload=["numpy.random"])
    pool.start_sync()
    try:
        yield pool
    finally:
        pool.stop_sync()


def test_engines_fork_from_one_server_that_preloaded_numpy(pool: pxpool.Pool) -> None:
    server = _server(pool)
    states = pool.view().apply_sync(_state)
    assert {state["ppid"] for state in states} == {server.pid}
    assert all(state["numpy"] for state in states)
    assert len({state["draw"] for state in states}) == len(states), "same numpy seed"


def test_server_holds_no_thread_and_no_zmq_context(pool: pxpool.Pool) -> None:
    server = _server(pool)
    assert server.num_threads() == 1
    links = [
        os.readlink(f"/proc/{server.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{server.pid}/fd")
    ]
    assert not [link for link in links if "eventfd" in link], links  # a zmq context's signaler
    assert not [c for c in server.net_connections("inet")], "the server has network sockets"
    # positive control: an engine, which has a zmq context, shows one
    engine = psutil.Process(pool.view(0).apply_sync(os.getpid))
    engine_fds = os.listdir(f"/proc/{engine.pid}/fd")
    assert any("eventfd" in os.readlink(f"/proc/{engine.pid}/fd/{fd}") for fd in engine_fds)


def test_killed_server_takes_no_engine_and_the_next_scale_forks_again(pool: pxpool.Pool) -> None:
    server = _server(pool)
    before = pool.view().apply_sync(os.getpid)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    assert pool.view().apply_sync(os.getpid) == before  # same engines, still serving
    assert pool.scale_sync(3) == [0, 1, 2]
    new = pool.view(2).apply_sync(_state)  # the first apply of a freshly forked engine
    assert new["ppid"] == _server(pool).pid != server.pid
    assert new["numpy"]
    assert pool.scale_sync(2) == [0, 1]
    # an engine whose server died is still watched: killing it is noticed
    psutil.Process(before[1]).kill()
    wait_until(lambda: 1 not in pool.ids, 15, "engine 1 (server gone) to be dropped")


def test_a_preload_that_does_not_import_fails_the_start_naming_it() -> None:
    pool = pxpool.Pool.from_profile("local", engines=1, preload=["json", "pxpool_no_such_mod"])
    try:
        with pytest.raises(EngineStartError, match=r"module 'pxpool_no_such_mod' of `preload`"):
            pool.start_sync()
    finally:
        pool.stop_sync()


def _family() -> tuple[int, list[str]]:
    import os

    with open(f"/proc/{os.getppid()}/cmdline", "rb") as handle:
        parent = handle.read().split(b"\0")
    return os.getppid(), [word.decode() for word in parent if word]


def test_a_batch_job_forks_its_engines_from_one_server_on_its_node() -> None:
    """Two engines in one SLURM job (plain launcher): one fork server in the job, which
    preloaded the profile's module, is the parent of both."""
    need("sbatch", "run `bash infra/up.sh` first")
    pool = pxpool.Pool.from_profile(
        "slurm",
        engines=2,
        engines_per_job=2,
        launcher="plain",
        partition=SLURM_PARTITION,
        preload=["json"],
        start_timeout=60,
    )
    with pool:
        families = pool.view().apply_sync(_family)
        assert len({pid for pid, _ in families}) == 1, families
        server = families[0][1]
        assert "pxpool._entry.forkserver.server" in server and "json" in server, server
    assert slurm_jobs(pool.name) == []
