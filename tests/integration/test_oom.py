"""Engines past their memory limit, on a real local pool.

With a writable memory cgroup (this machine has cgroup v1's memory controller), each
engine runs in a group of its own limited to ``[engine] memory_limit``: past it the
kernel's OOM killer ends the engine, which is reported as out of memory and replaced.
Without one (here: the lookup of the writable controller answers None, as it does in
a container with a read-only /sys) the limit is an address-space limit inside the
engine: the task gets a MemoryError naming the limit and the engine lives on.
"""

from __future__ import annotations

import resource
import threading
from collections.abc import Iterator

import ipyparallel as ipp
import pytest

import pxpool
from pxpool.engines import cgroups as _memory_limit

from .waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

LIMIT = 256 * 1024**2
WAIT = 60.0  # seconds for a dead engine to be replaced (an id can stay reserved 30 s)

needs_cgroup = pytest.mark.skipif(
    _memory_limit.hierarchy() is None, reason="no writable memory cgroup on this machine"
)


def hog(megabytes: int) -> int:
    """Allocate and touch ``megabytes`` MiB (bytearray pages are written as zeros)."""
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


def engine_facts() -> dict[str, object]:
    import os
    import resource

    return {"pid": os.getpid(), "address_space": resource.getrlimit(resource.RLIMIT_AS)[0]}


def row(pool: pxpool.Pool, engine_id: int) -> dict[str, object]:
    frame = pool.health()
    return frame[frame.engine_id == engine_id].iloc[0].to_dict()


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    with pxpool.Pool.from_profile(
        "local",
        engines=2,
        memory_limit="256M",
        restart="on-failure",
        restart_backoff=1.0,  # long enough to see the dead row before its replacement
        max_restarts=10,
    ) as started:
        yield started
    base = _memory_limit.pool_group(started.name)
    assert base is None or not base.exists(), "the pool's memory cgroups outlived it"


@needs_cgroup
def test_each_engine_runs_in_its_own_limited_cgroup(pool: pxpool.Pool) -> None:
    for engine_id in pool.ids:
        group = _memory_limit.engine_group(pool.name, f"engine-{engine_id}")
        assert group is not None
        limit_file = group / _memory_limit.hierarchy().limit_file  # type: ignore[union-attr]
        assert int(limit_file.read_text()) == LIMIT
        pid = pool.client[engine_id].apply_sync(engine_facts)["pid"]
        assert str(pid) in (group / "cgroup.procs").read_text().split()
    assert set(pool.health()["mem_limit_bytes"]) == {LIMIT}


@needs_cgroup
def test_engine_past_its_limit_is_reported_out_of_memory_and_replaced(pool: pxpool.Pool) -> None:
    before = {i: pool.client[i].apply_sync(engine_facts)["pid"] for i in pool.ids}
    pool.health()  # agents report from now on, so the dead row shows
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pool.apply(hog, 1024, retries=0)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=run)
    caller.start()
    # the controller notices the death by missed heartbeats (~5 s): watch health meanwhile
    frame = wait_until(
        lambda: (f := pool.health())[f.state == "dead"].engine_id.tolist(), 15, "a dead row"
    )
    engine = frame[0]
    caller.join(timeout=30)
    assert len(errors) == 1
    with pytest.raises(
        pxpool.EngineDied,
        match=rf"engine {engine} died while running it \(out of memory: the kernel",
    ):
        raise errors[0]
    assert "out of memory" in pool.engine_deaths()[engine]
    wait_until(
        lambda: row(pool, engine)["state"] == "idle" and row(pool, engine)["pid"] != before[engine],
        WAIT,
        f"engine {engine} replaced",
    )
    assert row(pool, engine)["mem_limit_bytes"] == LIMIT
    assert pool.apply(hog, 16) == 16 * 1024**2
    assert pool.map(abs, range(-50, 50)) == [abs(x) for x in range(-50, 50)]
    assert pool.ids == [0, 1]


@needs_cgroup
def test_a_task_retried_elsewhere_that_runs_out_of_memory_again_is_lost(pool: pxpool.Pool) -> None:
    with pytest.raises(
        pxpool.TaskLost, match=r"after 1 retry on other engines: engine \d died .*\(out of memory"
    ):
        pool.apply(hog, 1024, retries=1)  # the second engine runs out of memory too
    wait_until(lambda: pool.ids == [0, 1] and pool.apply(abs, -1) == 1, WAIT, "replacements")


@needs_cgroup
def test_a_removed_engines_group_goes(pool: pxpool.Pool) -> None:
    base = _memory_limit.pool_group(pool.name)
    assert base is not None
    pool.scale_sync(3)
    assert (base / "engine-2").is_dir()
    pool.scale_sync(2)
    wait_until(lambda: not (base / "engine-2").exists(), 10, "engine-2's group removed")
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == ["engine-0", "engine-1"]


def test_without_cgroups_the_address_space_is_limited_and_the_engine_lives_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_memory_limit, "hierarchy", lambda *a: None)
    limit = 2 * 1024**3  # an engine maps ~1 GB of address space before any work
    with pxpool.Pool.from_profile("local", engines=1, memory_limit="2G") as small:
        facts = small.apply(engine_facts)
        assert facts["address_space"] == limit
        with pytest.raises(
            ipp.RemoteError,
            match=r"MemoryError: engine 0 reached its address-space limit of 2.0 GiB "
            r"\(2147483648 bytes\) set by \[engine\] memory_limit = '2G' in profile 'local'",
        ):
            small.apply(hog, 3 * 1024)
        assert small.apply(hog, 64) == 64 * 1024**2  # the same engine, still usable
        assert small.apply(engine_facts)["pid"] == facts["pid"]
        assert list(small.health()["mem_limit_bytes"]) == [limit]
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY  # not here
