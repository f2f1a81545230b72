"""The shared provider suite across hosts: SSH engines on two lab hosts (pxlab2, pxlab3;
``infra/lab.sh``), each a network namespace with its own hostname, /tmp, /dev/shm and
sshd, reached over the lab's bridge. Beyond the generic checks: a DataFrame map, a
50 MB push/pull that must take the network (the hosts' /dev/shm is not the client's),
an engine killed on its host and replaced, health's host names, doctor, a post-mortem
debug session on a remote engine, and nothing left on any host after stop. A pool mixing
a lab host and the machine's own test sshd takes shared memory with the local engine
only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import ipyparallel as ipp
import numpy as np
import pandas as pd
import pytest

import pxpool
from pxpool._data import placement

from .debug_helpers import fails_with_local
from .provider_suite import ProviderSuite
from .ssh_helpers import SSH_HOST, SSH_KEY, SSH_OPTIONS, SSH_PORT
from .waits import wait_until

pytestmark = pytest.mark.integration
HOSTS = ["pxlab2", "pxlab3"]  # the lab hosts these tests use (fault tests use pxlab1)
LAB_KEY = os.environ.get("PXPOOL_LAB_SSH_KEY", "/tmp/pxpool-infra/lab/id_ed25519")
REPLACE_WAIT = 90.0
PUSH_BYTES = 50 * 1024 * 1024


def need_lab() -> None:
    if not (os.environ.get("PXPOOL_LAB_HOSTS") and os.path.isfile(LAB_KEY)):
        pytest.skip("the lab hosts are not running; run `bash infra/up.sh` first")


def lab_overrides(hosts: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"hosts": hosts, "identity_file": LAB_KEY, "ssh_options": SSH_OPTIONS, **more}


def lab_host(name: str, engines: int = 1) -> dict[str, Any]:
    return {"host": name, "user": "root", "engines": engines, "python": sys.executable}


def on_host(host: str, command: str) -> str:
    """``command``'s output on lab ``host``, over ssh (bounded)."""
    argv = ["ssh", *SSH_OPTIONS, "-o", "BatchMode=yes", "-i", LAB_KEY, f"root@{host}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def engines_on(host: str, pool_name: str) -> list[str]:
    """Engine processes of ``pool_name`` running on lab ``host``."""
    lines = on_host(
        host, f"pgrep -af '[p]xpool._entry.engine_main.*--cluster-id={pool_name}' || true"
    )
    return [line for line in lines.splitlines() if line.strip()]


def where() -> tuple[str, int]:
    import os
    import socket

    return socket.gethostname(), os.getpid()


def shm_maps() -> list[str]:
    """The /dev/shm files this engine has mapped."""
    with open("/proc/self/maps", encoding="utf-8") as handle:
        return sorted({line.split()[-1] for line in handle if "/dev/shm/" in line})


@ipp.interactive  # its globals are the engine's namespace, where `big` was pushed
def array_sum() -> float:
    return float(big.sum())  # type: ignore[name-defined]  # noqa: F821 (pushed)


class TestLabSsh(ProviderSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        need_lab()
        return ("ssh", lab_overrides([lab_host(h) for h in HOSTS], restart="on-failure"))

    def leftovers(self, pool: pxpool.Pool) -> list[str]:
        return [line for host in HOSTS for line in engines_on(host, pool.name)]

    def test_engines_run_on_the_lab_hosts_and_health_names_them(self, pool: pxpool.Pool) -> None:
        hosts = sorted(host for host, _ in pool.view().apply_sync(where))
        assert hosts == HOSTS
        frame = pool.health()
        frame = frame[frame["engine_id"].isin(pool.ids)]  # (scaled-away engines have rows too)
        assert sorted(frame["host"]) == HOSTS
        assert set(frame["state"]) == {"idle"}

    def test_a_dataframe_map_spans_both_hosts(self, pool: pxpool.Pool) -> None:
        n = 20_000
        df = pd.DataFrame({"x": np.arange(n), "s": [f"row{i}" for i in range(n)]})
        out = pool.map(lambda part: part.assign(n=part.s.str.len() + part.x), df, chunksize=2_000)
        pd.testing.assert_frame_equal(out, df.assign(n=df.s.str.len() + df.x))
        hosts = pool.map(
            lambda part: part.s.map(lambda _: __import__("socket").gethostname()),
            df,
            chunksize=1_000,
        )
        assert set(hosts) == set(HOSTS)

    def test_a_50mb_push_and_pull_take_the_network(self, pool: pxpool.Pool) -> None:
        assert placement.local_engines(pool.core, pool.ids) == set()  # no shared /dev/shm
        big = np.arange(PUSH_BYTES // 8, dtype=np.float64)
        pool.push({"big": big})
        assert pool.view().apply_sync(array_sum) == [float(big.sum())] * 2
        assert pool.view().apply_sync(shm_maps) == [[], []]  # nothing mapped from /dev/shm
        for pulled in pool.pull("big"):
            np.testing.assert_array_equal(pulled, big)
        pool.execute("del big")

    def test_an_engine_killed_on_its_host_is_replaced_there(self, pool: pxpool.Pool) -> None:
        host, pid = pool.view(0).apply_sync(where)
        pool.view(0).execute(f"print('engine {pid} on {host} before kill -9')")
        on_host(host, f"kill -9 {pid}")
        wait_until(
            lambda: pool.ids == [0, 1] and pool.view(0).apply_sync(where)[1] != pid,
            REPLACE_WAIT,
            "engine 0's replacement",
        )
        assert pool.view(0).apply_sync(where)[0] == host
        assert "ssh session ended" in pool.engine_deaths()[0]
        # what it printed stays in its file on the host, read over ssh (the hosts' /tmp
        # are their own), under the replacement's lines
        assert f"\nengine {pid} on {host} before kill -9\n" in pool.logs(0)

    def test_doctor_compares_the_remote_engines(self, pool: pxpool.Pool) -> None:
        frame = pool.doctor(show=False)
        assert not len(frame[frame["check"] == "python"]), frame  # same Python everywhere

    def test_post_mortem_of_a_failure_on_a_remote_engine(self, pool: pxpool.Pool) -> None:
        with pytest.raises(Exception, match="bad input 5"):
            pool.view(1).apply_sync(fails_with_local, 5)
        with pool.debug(1) as session:
            assert session.kind == "postmortem"
            assert session.send("p secret").strip() == "35"
            assert session.send("p __import__('socket').gethostname()").strip() == "'pxlab3'" or (
                session.send("p __import__('socket').gethostname()").strip() == "'pxlab2'"
            )
        assert session.ended

    def test_lane_tasks_run_on_the_lab_hosts(self, pool: pxpool.Pool) -> None:
        futures = [pool.submit(where) for _ in range(40)]
        assert {f.result(60)[0] for f in futures} <= set(HOSTS)
        assert pool.apply(where)[0] in HOSTS


@pytest.fixture
def mixed() -> Iterator[pxpool.Pool]:
    """Engine 0 on lab host pxlab2, engine 1 on this machine's test sshd."""
    need_lab()
    if not os.path.isfile(SSH_KEY):
        pytest.skip(f"no test sshd key at {SSH_KEY}; run `bash infra/up.sh` first")
    here = {
        "host": SSH_HOST,
        "port": SSH_PORT,
        "user": "root",
        "engines": 1,
        "python": sys.executable,
    }
    overrides = lab_overrides([lab_host("pxlab2"), here])
    overrides["identity_file"] = SSH_KEY  # the lab hosts let the test sshd's key in too
    with pxpool.Pool.from_profile("ssh", **overrides) as pool:
        yield pool
    assert engines_on("pxlab2", pool.name) == []


def test_shared_memory_only_with_the_engine_that_shares_dev_shm(mixed: pxpool.Pool) -> None:
    hosts = dict(zip(mixed.ids, (h for h, _ in mixed.view().apply_sync(where)), strict=True))
    local = {i for i, h in hosts.items() if h != "pxlab2"}
    assert len(local) == 1
    assert placement.local_engines(mixed.core, mixed.ids) == local
    big = np.ones(PUSH_BYTES // 8)
    mixed.push({"big": big})
    maps = dict(zip(mixed.ids, mixed.view().apply_sync(shm_maps), strict=True))
    assert all(maps[i] for i in local), maps  # the local engine mapped the shared copy
    assert all(not maps[i] for i in hosts if i not in local), maps
    assert mixed.view().apply_sync(array_sum) == [float(big.sum())] * 2
    for pulled in mixed.pull("big"):
        np.testing.assert_array_equal(pulled, big)
