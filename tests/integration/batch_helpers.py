"""Shared pieces of the batch-provider tests: the queue as each scheduler lists it,
and the ProviderSuite with a leftovers() that asks the scheduler."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest

import pxpool

from .provider_suite import ProviderSuite

SLURM_PARTITION = os.environ.get("PXPOOL_TEST_SLURM_PARTITION", "debug")


def need(command: str, hint: str, path: str | None = None) -> None:
    if shutil.which(command, path=path) is None:
        pytest.skip(f"{command} not found; {hint}")


def queued_job_names(argv: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """The job names a queue-listing command prints, one per line."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=20, env=env, check=False
    )
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def slurm_jobs(pool_name: str) -> list[str]:
    """This pool's SLURM jobs in any state squeue lists (pending, running, completing)."""
    names = queued_job_names(["squeue", "-h", "-o", "%i %j"])
    return [line for line in names if line.split()[-1].startswith(f"pxpool-{pool_name}-")]


class BatchSuite(ProviderSuite):
    """The shared suite; ``queue`` lists the pool's jobs still known to the scheduler."""

    def queue(self, pool: pxpool.Pool) -> list[str]:
        raise NotImplementedError

    def leftovers(self, pool: pxpool.Pool) -> list[str]:
        return self.queue(pool)
