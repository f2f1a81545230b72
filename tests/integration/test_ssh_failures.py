"""SSH failure reports, each provoked for real against the test sshd on 127.0.0.1:
a port with no sshd, a key the host does not accept, a missing remote python, a
remote ipyparallel of another version, and a controller that died under running
engines. Each must fail fast with its own error, and leave no process behind
(the conftest leak check covers this machine's side; the host is asked over ssh).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import ipyparallel as ipp
import pytest

import pxpool
from pxpool.engines.errors import RemotePythonError, SSHConnectError

from .ssh_helpers import SSH_HOST, remote_engines, ssh_overrides

pytestmark = pytest.mark.integration

FAST_SECONDS = 10.0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_expecting(error: type[Exception], match: str, **overrides: object) -> Exception:
    pool = pxpool.Pool.from_profile("ssh", start_timeout=30, **overrides)  # type: ignore[arg-type]
    began = time.monotonic()
    with pytest.raises(error, match=match) as caught:
        pool.start_sync()
    assert time.monotonic() - began < FAST_SECONDS
    assert pool.state == "failed"
    assert remote_engines(pool.name) == []
    return caught.value


def test_port_without_sshd_names_host_and_ssh_stderr() -> None:
    port = closed_port()
    err = start_expecting(
        SSHConnectError,
        rf"Cannot reach SSH host root@{SSH_HOST}:{port}(.|\n)*Connection refused",
        **ssh_overrides(port=port),
    )
    assert isinstance(err, SSHConnectError) and err.exit_code == 255
    assert "Connection refused" in err.stderr


def test_key_the_host_does_not_accept_reports_authentication_failed(tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=20
    )
    overrides = {**ssh_overrides(), "identity_file": str(key)}
    err = start_expecting(
        SSHConnectError, r"authentication failed(.|\n)*Permission denied", **overrides
    )
    assert isinstance(err, SSHConnectError) and err.host.endswith(
        f"{SSH_HOST}:{os.environ.get('PXPOOL_TEST_SSH_PORT', '22022')}"
    )


def test_missing_remote_python_is_named() -> None:
    err = start_expecting(
        RemotePythonError,
        r"python '/nonexistent/python3' is missing or not executable there",
        **ssh_overrides(python="/nonexistent/python3"),
    )
    assert isinstance(err, RemotePythonError) and err.remote_version is None


def test_other_ipyparallel_version_reports_both_versions(tmp_path: Path) -> None:
    # A real second Python with another ipyparallel is not installed here: this
    # interpreter is the real one, run with a stand-in ipyparallel package on its
    # path whose version differs, which is what the probe compares.
    fake_package = tmp_path / "site" / "ipyparallel"
    fake_package.mkdir(parents=True)
    (fake_package / "__init__.py").write_text('__version__ = "7.0.0"\n')
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    err = start_expecting(
        RemotePythonError,
        rf"Python \S+ with ipyparallel 7\.0\.0; this client runs Python \S+ "
        rf"with ipyparallel {ipp.__version__}",
        **ssh_overrides(python=str(python)),
    )
    assert isinstance(err, RemotePythonError)
    assert (err.remote_ipyparallel, err.local_ipyparallel) == ("7.0.0", ipp.__version__)
    assert err.remote_version == err.local_version == sys.version.split()[0]


def test_remote_python_without_pxpool_is_named_before_engines_start(tmp_path: Path) -> None:
    # as above: the real interpreter, with an empty pxpool package first on its path, so
    # pxpool's engine module cannot be found there
    (tmp_path / "site" / "pxpool").mkdir(parents=True)
    (tmp_path / "site" / "pxpool" / "__init__.py").write_text("")
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    err = start_expecting(
        RemotePythonError,
        r"cannot import pxpool, which runs each engine \(pxpool\._entry\.engine_main\).*install pxpool there",
        **ssh_overrides(python=str(python)),
    )
    assert isinstance(err, RemotePythonError)


def test_stop_kills_remote_engines_after_the_controller_died() -> None:
    pool = pxpool.Pool.from_profile("ssh", **ssh_overrides(engines=1))  # type: ignore[arg-type]
    pool.start_sync()
    try:
        assert len(remote_engines(pool.name)) == 1
        controller = pool.core.cluster.controller  # type: ignore[union-attr]
        controller.process.kill()
        controller.process.wait(10)
    finally:
        pool.stop_sync()
    assert remote_engines(pool.name) == []
