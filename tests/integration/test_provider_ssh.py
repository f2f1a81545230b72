"""The shared provider suite on the ssh provider, against the private sshd that
``infra/sshd.sh`` runs on 127.0.0.1 (its settings come from ``/tmp/pxpool-infra/env.sh``).

The "remote" host is this machine, so the conftest leak check sees the local ssh
clients; the engines themselves are children of sshd, so every test also asks the
host over ssh that no engine of the pool is left.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import pxpool

from .provider_suite import ProviderSuite
from .ssh_helpers import SSH_USER, remote_engines, ssh_overrides

pytestmark = pytest.mark.integration


class TestSSHProvider(ProviderSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        return ("ssh", ssh_overrides(self.engines))

    def leftovers(self, pool: pxpool.Pool) -> list[str]:
        return remote_engines(pool.name)

    def test_engines_run_under_sshd_with_the_remote_work_dir(self, pool: pxpool.Pool) -> None:
        assert len(remote_engines(pool.name)) == self.engines
        # ssh starts the remote shell in the user's home directory
        homes = pool.view().apply_sync(os.getcwd)
        assert homes == [os.path.expanduser(f"~{SSH_USER}")] * self.engines

    def test_profile_env_reaches_remote_engines(self, pool: pxpool.Pool) -> None:
        values = pool.view().apply_sync(lambda: __import__("os").environ.get("OMP_NUM_THREADS"))
        assert values == ["1"] * self.engines
