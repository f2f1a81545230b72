"""The fork server on its own, without a pool: what a forked child gets (its arguments,
environment, working directory, output descriptor, session, ignored signals), how its
exit is reported (a code, a signal), and that only its owner can reach the socket."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxpool._entry.forkserver import wire

TARGET = "tests.unit.forkserver_target"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("fs") / "s.sock")
    command = [sys.executable, "-m", "pxpool._entry.forkserver.server", path, "--target", TARGET]
    process = subprocess.Popen(
        [*command, "--warm", "--preload", "json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    assert "ready" in json.loads(process.stdout.readline())
    try:
        yield path
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not os.path.exists(path)  # the server removes its socket


def fork(
    path: str, how: str, tmp_path: Path, ignored: list[int] | None = None
) -> tuple[dict, int | None]:
    out = tmp_path / f"out-{how}"
    with open(out, "wb") as output, open(os.devnull, "rb") as stdin:
        body = {
            "argv": [how],
            "env": {"FS_VALUE": how},
            "cwd": str(tmp_path),
            "ignored": ignored or [],
        }
        forked = wire.fork(path, body, [stdin.fileno(), output.fileno(), output.fileno()])
    done, code = forked.wait(timeout=20)
    assert done
    return json.loads(out.read_text().splitlines()[0]), code


def test_a_child_gets_its_arguments_environment_directory_output_and_session(
    server: str, tmp_path: Path
) -> None:
    facts, code = fork(server, "7", tmp_path)
    assert facts == {"argv": ["7"], "cwd": str(tmp_path), "value": "7", "ignored": [], "sid": True}
    assert code == 7


def test_a_child_ended_by_a_signal_is_reported_with_it(server: str, tmp_path: Path) -> None:
    _, code = fork(server, "signal:SIGKILL", tmp_path)
    assert code == -signal.SIGKILL


def test_signals_the_caller_ignores_are_ignored_by_the_child(server: str, tmp_path: Path) -> None:
    facts, _ = fork(server, "0", tmp_path, ignored=[int(signal.SIGUSR1)])
    assert facts["ignored"] == ["SIGUSR1"]


def test_only_the_owner_may_open_the_socket(server: str) -> None:
    assert stat.S_IMODE(os.stat(server).st_mode) == 0o600


def test_a_malformed_request_is_refused_and_the_server_serves_on(
    server: str, tmp_path: Path
) -> None:
    with pytest.raises(wire.ForkRefused, match="stdin, stdout and stderr"):
        wire.fork(server, {"argv": []}, [])
    assert fork(server, "0", tmp_path)[1] == 0  # positive control
