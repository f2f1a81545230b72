"""The pure parts of SSH tunnels: which ports are forwarded, the info the engine
gets, ssh's options, and reading a failed forward from ssh's output. The real
tunnels are tested in tests/integration/test_ssh_tunnel.py."""

from __future__ import annotations

import socket

import pytest

from pxpool.engines import _ssh_tunnel
from pxpool.engines._ssh_tunnel import (
    choose_ports,
    controller_ports,
    failed_forward_port,
    forward_options,
    tunnel_info,
)
from pxpool.errors import EngineStartError, PxpoolError
from pxpool.profile import load_profile

# the engine connection file of ipyparallel 9.2, as the controller writes it
INFO = {
    "ssh": "",
    "interface": "tcp://127.0.0.1",
    "registration": 60879,
    "control": 43075,
    "mux": 46619,
    "task": 46805,
    "iopub": 39837,
    "hb_ping": 45635,
    "hb_pong": 33051,
    "broadcast": [45607, 57355],
    "key": "a691c6e4-a0417a09e2d3bb2ddbe17349",
    "curve_serverkey": None,
    "location": "vm",
    "pack": "orjson",
    "unpack": "orjson",
    "signature_scheme": "hmac-sha256",
}


def test_every_channel_port_is_forwarded_broadcast_included() -> None:
    assert controller_ports(INFO) == [
        60879, 43075, 46619, 46805, 39837, 45635, 33051, 45607, 57355
    ]  # fmt: skip


def test_engine_info_points_at_loopback_and_the_remote_ports() -> None:
    ports = controller_ports(INFO)
    forwards = [(21000 + i, port) for i, port in enumerate(ports)]
    seen = tunnel_info({**INFO, "interface": "tcp://*"}, forwards)
    assert seen["interface"] == "tcp://127.0.0.1"
    assert seen["registration"] == 21000 and seen["hb_pong"] == 21006
    assert seen["broadcast"] == [21007, 21008]
    assert {k: v for k, v in seen.items() if k not in ("interface", *_port_keys())} == {
        k: v for k, v in INFO.items() if k not in ("interface", *_port_keys())
    }


def _port_keys() -> tuple[str, ...]:
    return ("registration", "control", "mux", "task", "iopub", "hb_ping", "hb_pong", "broadcast")


def test_forward_options_fail_loudly_and_listen_on_loopback_only() -> None:
    options = forward_options({**INFO, "interface": "tcp://0.0.0.0"}, [(21000, 60879)])
    assert options == ["-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:21000:127.0.0.1:60879"]
    named = forward_options({**INFO, "interface": "tcp://10.1.2.3"}, [(21000, 60879)])
    assert named[-1] == "127.0.0.1:21000:10.1.2.3:60879"


def test_failed_forward_port_is_read_from_ssh_output() -> None:
    said = "Error: remote port forwarding failed for listen port 24011\n"
    assert failed_forward_port(said) == 24011
    assert failed_forward_port("Connection refused") is None


def test_chosen_ports_are_distinct_in_range_and_avoid_given_ones() -> None:
    low, high = _ssh_tunnel.PORT_RANGE
    avoid = set(range(low, low + 500))
    ports = choose_ports(9, avoid, host_is_here=False)
    assert len(set(ports)) == 9
    assert all(low + 500 <= p < high for p in ports)


def test_ports_taken_here_are_skipped_for_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setattr(_ssh_tunnel, "PORT_RANGE", (port, port + 1))
        with pytest.raises(EngineStartError, match=r"No 1 free ports for an engine's SSH tunnel"):
            choose_ports(1, set(), host_is_here=True)
        assert choose_ports(1, set(), host_is_here=False) == [port]


def test_no_free_ports_is_a_pxpool_error_naming_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ssh_tunnel, "PORT_RANGE", (25000, 25004))
    with pytest.raises(
        PxpoolError, match=r"in 25000-25003 \(4 ports; 0 in use(.|\n)*tunnel = false"
    ):
        choose_ports(9, set(), host_is_here=False)


def test_tunnels_are_on_unless_the_profile_says_otherwise() -> None:
    assert load_profile("ssh", hosts=["node1"]).ssh.tunnel is True
    assert load_profile("ssh", hosts=["node1"], tunnel=False).ssh.tunnel is False
