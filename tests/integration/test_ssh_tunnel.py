"""SSH pools reach the controller through reverse SSH tunnels (the default), tested
against the private sshd on 127.0.0.1.

The host is named ``tunnelhost`` and ssh is sent to 127.0.0.1 with ``HostName``, so
pxpool treats it as any other machine (no local port checks): the engine gets
loopback and remote ports only ssh's forwards serve. Since that machine is this
one, the engine's sockets and sshd's listeners are visible here with psutil.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import pxpool
from pxpool._health import agent as health_agent
from pxpool.engines import _ssh_tunnel
from pxpool.engines.errors import SSHConnectError

from .debug_helpers import fails_with_local
from .ssh_helpers import remote_engines, ssh_overrides

pytestmark = pytest.mark.integration


def remote_host_overrides(engines: int, **keys: Any) -> dict[str, Any]:
    overrides = ssh_overrides(engines=engines, host="tunnelhost")
    overrides["ssh_options"] = [*overrides["ssh_options"], "-o", "HostName=127.0.0.1"]
    return {**overrides, **keys}


def controller_info(pool: pxpool.Pool) -> dict[str, Any]:
    cluster = pool.core.cluster  # type: ignore[attr-defined]
    path = os.path.join(
        cluster.profile_dir, "security", f"ipcontroller-{cluster.cluster_id}-engine.json"
    )
    with open(path) as handle:
        return dict(json.load(handle))


def engine_info() -> dict[str, Any]:
    import json
    import os

    return dict(json.loads(os.environ["IPP_CONNECTION_INFO"]))


def forwards(pool: pxpool.Pool, engine_id: int) -> dict[int, int]:
    """remote port -> controller port of one engine's ssh client."""
    launcher = pool.core.cluster.engines[f"ssh-{engine_id}"]  # type: ignore[attr-defined]
    return {int(r): int(c) for r, c in launcher.tunnel_forwards}


def listeners(ports: set[int]) -> dict[int, int]:
    """port -> pid of the process listening on it, for the given loopback ports."""
    return {
        c.laddr.port: c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in ports and c.pid
    }


@pytest.fixture(scope="module")
def pool() -> Iterator[pxpool.Pool]:
    pool = pxpool.Pool.from_profile("ssh", **remote_host_overrides(2))  # type: ignore[arg-type]
    pool.start_sync()
    try:
        yield pool
    finally:
        pool.stop_sync()


def test_engine_connects_to_loopback_ports_that_sshd_forwards(pool: pxpool.Pool) -> None:
    controller = controller_info(pool)
    assert pool.profile.ssh.tunnel is True
    for engine_id, seen in zip(pool.ids, pool.view().apply_sync(engine_info), strict=True):
        tunnel = forwards(pool, engine_id)
        assert seen["interface"] == "tcp://127.0.0.1"
        for key in ("registration", "control", "mux", "task", "iopub", "hb_ping", "hb_pong"):
            assert tunnel[seen[key]] == controller[key] != seen[key]
        assert [tunnel[p] for p in seen["broadcast"]] == controller["broadcast"]
        # every remote port is served by an sshd session, none by the controller
        served = listeners(set(tunnel))
        assert set(served) == set(tunnel)
        assert {psutil.Process(p).name() for p in served.values()} == {"sshd"}
    one, two = (set(forwards(pool, i)) for i in pool.ids)
    assert not one & two, "each engine's ssh client has its own ports"


def test_engine_sockets_reach_only_tunnel_ports(pool: pxpool.Pool) -> None:
    controller_ports = set(_ssh_tunnel.controller_ports(controller_info(pool)))
    pids = pool.view().apply_sync(os.getpid)
    for engine_id, pid in zip(pool.ids, pids, strict=True):
        peers = {c.raddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr}
        assert peers & set(forwards(pool, engine_id))
        assert not peers & controller_ports


def test_tasks_and_pushed_data_travel_through_the_tunnel(pool: pxpool.Pool) -> None:
    assert pool.map(lambda x: x * x, range(40)) == [x * x for x in range(40)]
    payload = bytes(range(256)) * 40_000  # 10 MB each way
    pool.push({"payload": payload})
    assert pool.view().apply_sync(lambda: len(payload)) == [len(payload)] * 2  # noqa: F821
    assert pool.pull("payload") == [payload, payload]


def agent_forwards() -> dict[int, tuple[psutil.Process, int]]:
    """This process's ``ssh -N -L`` children: local port -> (process, target port)."""
    found = {}
    for child in psutil.Process().children():
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if "-N" in argv and "-L" in argv and child.status() != psutil.STATUS_ZOMBIE:
            _, local, _, target = argv[argv.index("-L") + 1].split(":")
            found[int(local)] = (child, int(target))
    return found


def connected_ports() -> set[int]:
    """Remote ports of this process's established TCP connections."""
    return {
        c.raddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.status == psutil.CONN_ESTABLISHED
    }


def wait_states(pool: pxpool.Pool, states: list[str], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        frame = pool.health()
        if list(frame["state"]) == states or time.monotonic() > deadline:
            return frame
        time.sleep(0.1)


def test_health_reports_arrive_through_local_forwards_to_the_agents(pool: pxpool.Pool) -> None:
    frame = wait_states(pool, ["idle", "idle"])
    assert list(frame["state"]) == ["idle", "idle"]
    assert (frame["rss_bytes"] > 0).all() and frame["cpu_percent"].notna().all()
    engine_pids = dict(zip(pool.ids, pool.view().apply_sync(os.getpid), strict=True))
    forwarded = agent_forwards()
    for engine_id, pid in engine_pids.items():
        # the engine's agent listens on its host; this client reads it through a forward
        agent_url = pool.view(engine_id).apply_sync(health_agent.listening_address)
        far = int(agent_url.rsplit(":", 1)[1])
        local = next(port for port, (_, target) in forwarded.items() if target == far)
        assert listeners({far}) == {far: pid}
        assert local in connected_ports()
    busy = pool.view(1).apply_async(time.sleep, 1.5)
    assert list(wait_states(pool, ["idle", "busy"])["state"]) == ["idle", "busy"]
    busy.get(10)


def test_post_mortem_debugger_attaches_through_a_local_forward(pool: pxpool.Pool) -> None:
    with pytest.raises(Exception, match="bad input 6"):
        pool.view(1).apply_sync(fails_with_local, 6)
    engine_pid = pool.view(1).apply_sync(os.getpid)
    with pool.debug(1) as session:
        assert session.kind == "postmortem"
        assert session.send("p secret").strip() == "42"
        local = session.peer[1]
        forward, target = agent_forwards()[local]
        assert listeners({target}) == {target: engine_pid}
    assert session.ended
    assert pool.view(1).apply_sync(lambda: 7) == 7


def test_restarted_engine_gets_a_new_tunnel_and_the_old_session_ends(
    pool: pxpool.Pool,
) -> None:
    old = forwards(pool, 0)
    sessions = set(listeners(set(old)).values())
    assert sessions
    launcher = pool.core.cluster.engines["ssh-0"]  # type: ignore[attr-defined]
    old_agents = [f.process.pid for f in launcher.agent_forwards]
    assert old_agents, "engine 0's health agent is reached through a forward"
    pool.restart_sync(0)
    new = forwards(pool, 0)
    assert new != old and set(new.values()) == set(old.values())
    assert pool.view().apply_sync(lambda: 7) == [7, 7]
    ended = sessions - set(listeners(set(new)).values())
    assert ended == sessions
    _, alive = psutil.wait_procs([psutil.Process(p) for p in ended if psutil.pid_exists(p)], 5)
    assert not alive, f"the old engine's sshd session still runs: {alive}"
    assert not set(old_agents) & {p.pid for p, _ in agent_forwards().values()}
    assert list(wait_states(pool, ["idle", "idle"])["state"]) == ["idle", "idle"]
    new_agents = pool.core.cluster.engines["ssh-0"].agent_forwards  # type: ignore[attr-defined]
    # one forward per agent on the new engine (health, task lane), none of the old ones
    assert len(new_agents) == len(old_agents)
    assert not {f.process.pid for f in new_agents} & set(old_agents)


def test_stop_ends_the_sshd_sessions_and_their_listeners(pool: pxpool.Pool) -> None:
    ports = {p for i in pool.ids for p in forwards(pool, i)}
    sessions = set(listeners(ports).values())
    assert len(sessions) == 2
    pool.stop_sync()
    assert remote_engines(pool.name) == []
    gone = psutil.wait_procs([psutil.Process(p) for p in sessions if psutil.pid_exists(p)], 5)
    assert not gone[1], f"sshd sessions still running: {gone[1]}"
    assert listeners(ports) == {}
    assert agent_forwards() == {}, "the forwards to the engines' agents are closed"


def hold_block(count: int) -> list[socket.socket]:
    """Listening sockets on ``count`` consecutive loopback ports (a free block)."""
    for base in range(40000, 60000, 97):
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                held.append(socket.create_server(("127.0.0.1", port)))
            return held
        except OSError:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free loopback ports in 40000-60000")


def test_taken_remote_port_is_retried_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # every port of a small range is held here, so sshd cannot listen on any of them:
    # each of the 3 tries picks 9 of them and ssh ends on the first it cannot take
    held = hold_block(12)
    try:
        first = held[0].getsockname()[1]
        monkeypatch.setattr(_ssh_tunnel, "PORT_RANGE", (first, first + len(held)))
        pool = pxpool.Pool.from_profile("ssh", **remote_host_overrides(1))  # type: ignore[arg-type]
        with pytest.raises(
            SSHConnectError,
            match=r"Cannot reach SSH host root@tunnelhost:\d+(.|\n)*remote port forwarding "
            r"failed for listen port \d+(.|\n)*sshd on tunnelhost did not open remote port \d+ "
            r"for the tunnel to the controller, nor other ports on 3 tries(.|\n)*"
            r"set tunnel = false in \[ssh\]",
        ):
            pool.start_sync()
        assert pool.state == "failed"
        assert remote_engines(pool.name) == []
    finally:
        for sock in held:
            sock.close()


def test_tunnel_false_connects_straight_to_the_controller() -> None:
    overrides = {**ssh_overrides(engines=1), "tunnel": False}
    with pxpool.Pool.from_profile("ssh", **overrides) as pool:  # type: ignore[arg-type]
        controller = controller_info(pool)
        [seen] = pool.view().apply_sync(engine_info)
        assert seen["interface"] == controller["interface"]
        assert seen["registration"] == controller["registration"]
        assert forwards(pool, 0) == {}
        assert pool.apply(lambda: 6 * 7) == 42
    assert remote_engines(pool.name) == []
