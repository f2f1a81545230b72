"""The test sshd (``infra/sshd.sh`` on 127.0.0.1, settings from ``PXPOOL_TEST_SSH_*``):
profile overrides for pools on it, and the engine processes a pool left there, asked
over ssh."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

SSH_HOST = os.environ.get("PXPOOL_TEST_SSH_HOST", "127.0.0.1")
SSH_PORT = int(os.environ.get("PXPOOL_TEST_SSH_PORT", "22022"))
SSH_USER = os.environ.get("PXPOOL_TEST_SSH_USER", "root")
SSH_KEY = os.environ.get("PXPOOL_TEST_SSH_KEY", "/tmp/pxpool-infra/sshd/id_ed25519")
# the test host's key is new on every infra start: do not record or check it
SSH_OPTIONS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
]


def ssh_overrides(engines: int = 2, **host: Any) -> dict[str, Any]:
    """Profile overrides for pools on the test sshd; ``host`` changes host keys."""
    if not os.path.isfile(SSH_KEY):
        pytest.skip(f"no test sshd key at {SSH_KEY}; run `bash infra/up.sh` first")
    entry = {
        "host": SSH_HOST,
        "port": SSH_PORT,
        "user": SSH_USER,
        "engines": engines,
        "python": sys.executable,
        **host,
    }
    return {"hosts": [entry], "identity_file": SSH_KEY, "ssh_options": SSH_OPTIONS}


def remote_engines(pool_name: str) -> list[str]:
    """Engine processes of pool ``pool_name`` on the test host, asked over ssh."""
    command = [
        "ssh",
        *SSH_OPTIONS,
        "-i",
        SSH_KEY,
        "-p",
        str(SSH_PORT),
        f"{SSH_USER}@{SSH_HOST}",
        # the bracket keeps this ssh client's own command line from matching
        f"pgrep -af '[p]xpool._entry.engine_main.*--cluster-id={pool_name}' || true",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    # on this test host the local ssh clients (whose script names the engine) match too
    return [line for line in done.stdout.splitlines() if line.split()[1] != "ssh"]
