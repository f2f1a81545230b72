"""Local forwards to agents on SSH engines: a forward that cannot open says why."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from pxpool.engines._ssh_reach import open_forward
from pxpool.engines.errors import SSHConnectError


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once closed


def test_a_host_that_refuses_ssh_names_the_host_and_what_ssh_said(tmp_path: Path) -> None:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "-p", str(closed_port())]
    with pytest.raises(
        SSHConnectError,
        match=r"Cannot reach SSH host node9: `ssh .* -N -o ExitOnForwardFailure=yes -L "
        r"127.0.0.1:\d+:127.0.0.1:4321 127.0.0.1` exited with 255(.|\n)*Connection refused"
        r"(.|\n)*agent at 127.0.0.1:4321(.|\n)*AllowTcpForwarding",
    ):
        open_forward([*argv, "127.0.0.1"], ("127.0.0.1", 4321), "node9", {}, str(tmp_path))
    assert not [p for p in psutil.Process().children() if p.name() == "ssh"]
    assert list(tmp_path.iterdir()) == [], "ssh's output file is removed with the forward"
