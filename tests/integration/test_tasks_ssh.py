"""The task lane on an SSH pool whose engines sit behind tunnels: the client reaches each
engine's lane agent through a local SSH forward, as health and debugging do."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import cloudpickle
import psutil
import pytest

import pxpool
from pxpool._tasks import agent as lane_agent

from .ssh_helpers import ssh_overrides

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])
RESULT_WAIT = 60.0


def where(x: int) -> tuple[int, int]:
    import os

    return os.getpid(), x * 2


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    # named "tunnelhost" and sent to 127.0.0.1: pxpool treats it as another machine
    overrides: dict[str, Any] = ssh_overrides(engines=2, host="tunnelhost")
    overrides["ssh_options"] = [*overrides["ssh_options"], "-o", "HostName=127.0.0.1"]
    pool = pxpool.Pool.from_profile("ssh", **overrides)
    pool.start_sync()
    try:
        yield pool
    finally:
        pool.stop_sync()


def local_forwards() -> dict[int, int]:
    """This process's ``ssh -N -L`` children: local port -> target port."""
    found = {}
    for child in psutil.Process().children():
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if "-N" in argv and "-L" in argv:
            _, local, _, target = argv[argv.index("-L") + 1].split(":")
            found[int(local)] = int(target)
    return found


def connected_ports() -> set[int]:
    return {
        c.raddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.status == psutil.CONN_ESTABLISHED
    }


def test_submit_reaches_tunnelled_engines_through_local_forwards(pool: pxpool.Pool) -> None:
    pids = set(pool.view().apply_sync(os.getpid))
    futures = [pool.submit(where, i) for i in range(200)]
    answers = [f.result(RESULT_WAIT) for f in futures]
    assert [value for _, value in answers] == [i * 2 for i in range(200)]
    assert {pid for pid, _ in answers} == pids
    forwards = local_forwards()
    for engine_id in pool.ids:
        address = pool.client[engine_id].apply_sync(lane_agent.install, "127.0.0.1")["address"]
        far = int(address.rsplit(":", 1)[1])  # where the agent listens, on the engine's host
        local = [port for port, target in forwards.items() if target == far]
        assert local and local[0] in connected_ports(), f"engine {engine_id}: no forward used"
    with pool.executor() as executor:
        chunked = list(executor.map(where, range(20), chunksize=5))
    assert [value for _, value in chunked] == [i * 2 for i in range(20)]
