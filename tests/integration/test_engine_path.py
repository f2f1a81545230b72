"""Engines join and leave a pool through one path that always writes the pool's record
(``pool.json``), so another process that attaches sees the engines the pool really has.
A panel's "stop" once removed an engine without writing the record: ``Pool.attach``
elsewhere then waited for an engine that was gone and counted it as the pool's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import pxpool
from pxpool._core import runtime

from .waits import wait_until

pytestmark = pytest.mark.integration
ATTACH_TIMEOUT = 60.0  # Pool.attach waits this long for engines the record names


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile("local", engines=2) as running:
        yield running


def recorded_ids(name: str) -> list[int]:
    record = json.loads((runtime.pool_dir(name) / runtime.RECORD_FILE).read_text())
    return sorted(i for ids in record["engine_sets"].values() for i in ids)


def attach_elsewhere(name: str) -> dict[str, Any]:
    """What another Python process sees when it attaches to pool ``name``."""
    code = (
        "import json, sys, pxpool\n"
        f"p = pxpool.Pool.attach(sys.argv[1], timeout={ATTACH_TIMEOUT})\n"
        "print(json.dumps({'ids': p.ids, 'owned': sorted(p.core.owner_ids())}))\n"
        "p.disconnect()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_panel_stop_is_recorded_and_another_process_attaches_to_the_engines_left(
    pool: pxpool.Pool,
) -> None:
    assert recorded_ids(pool.name) == [0, 1]
    panel = pool.panel(refresh=60)
    try:
        stop = next(b for b in panel.rows[1].buttons if b.description == "stop")
        stop.click()  # the panel runs its action in a worker thread
        wait_until(
            lambda: pool.ids == [0] and recorded_ids(pool.name) == [0],
            30,
            "engine 1 stopped and the record saying so",
        )
    finally:
        panel.close()
    assert "failed" not in str(panel.error.value)
    assert attach_elsewhere(pool.name) == {"ids": [0], "owned": [0]}


def test_scale_and_restart_keep_the_record_in_step(pool: pxpool.Pool) -> None:
    grown = pool.scale_sync(3)
    assert recorded_ids(pool.name) == grown == pool.ids
    pool.restart_sync(grown[-1])
    assert recorded_ids(pool.name) == grown == pool.ids
    assert attach_elsewhere(pool.name) == {"ids": grown, "owned": grown}
    assert pool.scale_sync(1) == [0]
    assert recorded_ids(pool.name) == [0]
    assert attach_elsewhere(pool.name) == {"ids": [0], "owned": [0]}
