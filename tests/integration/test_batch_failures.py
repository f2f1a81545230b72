"""Every batch failure report, provoked for real on SLURM (``infra/slurm.sh``), each
within a short bounded wait; after each the pool is stopped and squeue lists none of
its jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import pxpool

from .batch_helpers import SLURM_PARTITION, need, slurm_jobs

pytestmark = pytest.mark.integration


@pytest.fixture
def failing_pool() -> Iterator[Any]:
    """Start a SLURM pool that must fail; check the failure left no job queued."""
    need("sbatch", "run `bash infra/up.sh` first")
    pools: list[pxpool.Pool] = []

    def start(**overrides: Any) -> None:
        settings = {"engines": 2, "partition": SLURM_PARTITION, "start_timeout": 30, **overrides}
        pool = pxpool.Pool.from_profile("slurm", **settings)
        pools.append(pool)
        pool.start_sync()
        raise AssertionError(f"pool {pool.name} started; it should have failed")

    yield start
    for pool in pools:
        assert pool.state == "failed"
        pool.stop_sync()
        assert slurm_jobs(pool.name) == []


def test_missing_submit_command_names_it_and_the_profile(
    failing_pool: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without sbatch
    with pytest.raises(pxpool.SubmitCommandNotFound, match=r"'sbatch' is not on PATH") as info:
        failing_pool()
    assert "profile 'slurm'" in str(info.value) and str(tmp_path) in str(info.value)


def test_rejected_submit_shows_command_exit_code_and_output(failing_pool: Any) -> None:
    with pytest.raises(
        pxpool.SubmitRejected, match=r"`sbatch .*job-0\.sh` exited with code 1"
    ) as info:
        failing_pool(partition="nope")
    error = info.value
    assert error.exit_code == 1 and error.command[0] == "sbatch"
    assert "invalid partition specified: nope" in error.stderr
    assert "invalid partition specified: nope" in str(error)


def test_job_that_fails_before_registering_reports_id_state_and_output(failing_pool: Any) -> None:
    began = time.monotonic()
    with pytest.raises(
        pxpool.JobFailedError, match=r"SLURM job \d+ \(engines \[\d\]\) ended"
    ) as info:
        failing_pool(prologue=["echo preparing the engines", "exit 3"])
    assert time.monotonic() - began < 20  # reported when the job ends, not at the timeout
    error = info.value
    assert error.state.startswith("FAILED") and "exit code 3:0" in error.state
    assert "preparing the engines" in str(error)
    assert "pxpool: job script exited with status 3" in str(error)


def test_engines_still_queued_at_the_timeout_report_pending_jobs_and_why(
    failing_pool: Any,
) -> None:
    # more CPUs than the one node has: SLURM keeps the jobs pending instead of rejecting
    began = time.monotonic()
    with pytest.raises(
        pxpool.EnginesMissingError, match=r"0 of 2 engines registered within 6s"
    ) as info:
        failing_pool(cores_per_engine=9, start_timeout=6)
    assert time.monotonic() - began < 15
    error = info.value
    assert len(error.pending) == 2
    assert all(job in str(error) for job in error.pending)
    assert "PENDING (reason: PartitionConfig)" in str(error)
