"""The `pxpool` command through real subprocesses, as a shell user runs it."""

from __future__ import annotations

import logging
import os

import psutil
import pytest

import pxpool
from pxpool import PoolStateError
from pxpool._core.state import PoolState

from .cli_helpers import pxpool_cli
from .ssh_helpers import remote_engines, ssh_overrides
from .waits import wait_until

pytestmark = pytest.mark.integration

COMMANDS = ["start", "script", "list", "status", "stop", "profiles", "demo"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command: str | None) -> None:
    result = pxpool_cli(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: pxpool" in result.stdout


def test_detached_pool_outlives_the_command_and_stops_by_name() -> None:
    started = pxpool_cli("start", "local", "-n", "2", "--name", "cli-pool")
    try:
        assert started.returncode == 0, started.stderr
        assert "started pool 'cli-pool' (local) with 2 engines: [0, 1]" in started.stdout

        listed = pxpool_cli("list")
        assert listed.stdout.split("\n")[0].split() == [
            "name",
            "profile",
            "provider",
            "state",
            "engines",
        ]
        assert ["cli-pool", "local", "local", "running", "2"] in [
            line.split() for line in listed.stdout.splitlines()
        ]

        status = pxpool_cli("status", "cli-pool")
        assert status.returncode == 0, status.stderr
        header, *lines = status.stdout.splitlines()[1:]
        rows = [dict(zip(header.split(), line.split(), strict=False)) for line in lines]
        assert [row["engine_id"] for row in rows] == ["0", "1"]
        assert all(row["state"] == "idle" and int(row["pid"]) > 0 for row in rows)

        pool = pxpool.Pool.attach("cli-pool")
        assert pool.apply(sum, [6, 36]) == 42  # a builtin: this module is not on the engines' path
        pool.disconnect()
    finally:
        stopped = pxpool_cli("stop", "cli-pool")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped pool 'cli-pool'" in stopped.stdout
    assert pxpool_cli("list").stdout.strip() == "no pools"


def test_unknown_profile_fails_with_known_names_on_stderr() -> None:
    result = pxpool_cli("start", "slrum")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "pxpool: error: Unknown profile 'slrum'; known: " in result.stderr
    assert "slurm" in result.stderr


def test_bad_setting_names_the_key() -> None:
    result = pxpool_cli("start", "local", "--set", "engins=2")
    assert result.returncode == 1
    assert "engins: unknown setting; did you mean 'engines'?" in result.stderr


def test_stop_without_a_name_says_how() -> None:
    result = pxpool_cli("stop")
    assert result.returncode == 1
    assert "pxpool stop NAME" in result.stderr


def test_stop_of_unknown_pool_lists_running_pools() -> None:
    result = pxpool_cli("stop", "nothing-here")
    assert result.returncode == 1
    assert "No running pool named 'nothing-here'; running: (none)" in result.stderr


def test_attach_to_a_stale_pool_says_to_stop_it() -> None:
    started = pxpool_cli("start", "local", "-n", "1", "--name", "stale")
    assert started.returncode == 0, started.stderr
    record_pool = pxpool.Pool.attach("stale")
    controller_pid = record_pool.core.cluster.controller.pid
    record_pool.disconnect()
    os.kill(controller_pid, 9)
    try:
        with pytest.raises(
            pxpool.PoolStateError, match="is not running any more.*pxpool stop stale"
        ):
            pxpool.Pool.attach("stale")
        assert "stale" in pxpool_cli("list").stdout
    finally:
        stopped = pxpool_cli("stop", "stale")
    assert stopped.returncode == 0, stopped.stderr


def test_profiles_lists_origin_of_each() -> None:
    result = pxpool_cli("profiles")
    assert result.returncode == 0
    lines = [line.split()[:2] for line in result.stdout.splitlines()[1:]]
    assert ["local", "built-in"] in lines and ["slurm", "built-in"] in lines


def test_demo_runs_real_work_prints_engine_table_and_exits_zero() -> None:
    result = pxpool_cli("demo", "-n", "2", timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[engine 0]" in out and "[engine 1]" in out
    assert "sums back: [499999500000.0, 499999500000.0]" in out
    assert "8 matrix norms" in out
    header = next(line for line in out.splitlines() if line.startswith("engine "))
    assert header.split() == ["engine", "host", "pid", "state", "tasks_done"]
    assert out.rstrip().endswith("pxpool demo: done.")


def test_script_of_a_direct_provider_says_which_providers_have_scripts() -> None:
    result = pxpool_cli("script", "local")
    assert result.returncode == 1
    assert "submits no job script; job scripts exist for batch providers" in result.stderr


def test_stop_from_another_process_uses_the_hosts_the_ssh_pool_was_given() -> None:
    # hosts only as a keyword: the built-in ssh profile lists none
    pool = pxpool.Pool.from_profile("ssh", pool_name="cli-ssh", **ssh_overrides(engines=1))
    pool.start_sync()
    try:
        attached = pxpool.Pool.attach("cli-ssh")
        assert attached.profile.ssh.hosts == pool.profile.ssh.hosts
        assert attached.apply(sum, [6, 36]) == 42
        attached.disconnect()
        clients = [p for p in psutil.Process().children() if p.name() == "ssh"]
        stopped = pxpool_cli("stop", "cli-ssh")
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped pool 'cli-ssh'" in stopped.stdout
        assert remote_engines("cli-ssh") == []
        _, alive = psutil.wait_procs(clients, 5)
        assert not alive, f"the engines' ssh clients still run: {alive}"
    finally:
        pool.stop_sync()
    assert pxpool_cli("list").stdout.strip() == "no pools"


def test_stop_of_a_pool_a_live_process_owns_is_done_by_that_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`pxpool stop` (and JupyterLab's Stop button) asks the notebook that owns the pool:
    it stops the pool itself and its pool object says so, instead of watching its
    engines die and replacing them."""
    pool = pxpool.Pool.from_profile("local", engines=1, pool_name="cli-owned")
    pool.start_sync()
    try:
        with caplog.at_level(logging.WARNING, logger="pxpool"):
            stopped = pxpool_cli("stop", "cli-owned")
            assert stopped.returncode == 0, stopped.stderr
            assert "stopped pool 'cli-owned'" in stopped.stdout
            wait_until(lambda: pool.state is PoolState.STOPPED, 20, "the owner stopped it")
        with pytest.raises(PoolStateError, match=r"was stopped: process \d+ \(`pxpool stop`"):
            pool.apply(os.getpid)
        said = [r.getMessage() for r in caplog.records]
        assert any("is stopping: process" in line for line in said), said
        assert not any("died" in line or "lost" in line for line in said), said
        pool.start_sync()  # and it starts again
        assert pool.apply(sum, [40, 2]) == 42
    finally:
        pool.stop_sync()
    assert pxpool_cli("list").stdout.strip() == "no pools"
