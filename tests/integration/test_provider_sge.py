"""The shared provider suite on Son of Grid Engine 8.1.9 (``infra/sge.sh``: one host,
queue all.q with 8 slots, PE smp), once with one engine per job and once with two
engines in one job (two slots through the smp PE); after the pool stops, qstat lists
none of its jobs. Plus a submit to a queue that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

import pxpool

from .batch_helpers import SGE_QUEUE, BatchSuite, need_sge, sge_jobs

pytestmark = pytest.mark.integration


class TestSGE(BatchSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        need_sge()
        return ("sge", {"queue": SGE_QUEUE, "walltime": "00:10:00", "start_timeout": 60})

    def queue(self, pool: pxpool.Pool) -> list[str]:
        return sge_jobs(pool.name)

    def test_each_engine_runs_in_its_own_job(self, pool: pxpool.Pool) -> None:
        jobs = {pool.provider.job_id_of(i) for i in pool.ids}
        assert None not in jobs and len(jobs) == self.engines
        assert sorted(line.split()[0] for line in self.queue(pool)) == sorted(map(str, jobs))


def _slots() -> str:
    return os.environ.get("NSLOTS", "")


class TestSGETwoEnginesPerJob(BatchSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        need_sge()
        return (
            "sge",
            {"queue": SGE_QUEUE, "engines_per_job": 2, "memory": "200M", "start_timeout": 60},
        )

    def queue(self, pool: pxpool.Pool) -> list[str]:
        return sge_jobs(pool.name)

    def test_engines_share_one_job_with_two_slots(self, pool: pxpool.Pool) -> None:
        assert pool.provider.job_id_of(0) == pool.provider.job_id_of(1) is not None
        assert pool.view([0, 1]).apply_sync(_slots) == ["2", "2"]


def test_unknown_queue_is_rejected_with_qsub_stderr() -> None:
    need_sge()
    pool = pxpool.Pool.from_profile("sge", engines=1, queue="nosuch.q", start_timeout=30)
    with pytest.raises(pxpool.SubmitRejected, match=r"`qsub .*job-0\.sh` exited with code") as info:
        pool.start_sync()
    error = info.value
    assert error.command[0] == "qsub" and error.exit_code not in (0, None)
    assert 'job requests unknown queue "nosuch.q"' in error.stderr
    assert 'job requests unknown queue "nosuch.q"' in str(error)
    pool.stop_sync()
    assert sge_jobs(pool.name) == []


def test_job_that_fails_reports_sge_output_from_the_o_directive() -> None:
    need_sge()
    pool = pxpool.Pool.from_profile(
        "sge", engines=1, queue=SGE_QUEUE, prologue=["echo no python here", "exit 3"]
    )
    with pytest.raises(pxpool.JobFailedError, match=r"SGE job \d+ \(engines \[0\]\) ended") as info:
        pool.start_sync()
    assert "no python here" in str(info.value) and "exited with status 3" in str(info.value)
    pool.stop_sync()
    assert sge_jobs(pool.name) == []


def test_engines_still_queued_report_qw_and_the_schedulers_reason() -> None:
    # more slots than queue all.q has: SGE keeps the job waiting (qw) instead of rejecting
    need_sge()
    pool = pxpool.Pool.from_profile(
        "sge", engines=1, queue=SGE_QUEUE, cores_per_engine=20, start_timeout=6
    )
    began = time.monotonic()
    with pytest.raises(pxpool.EnginesMissingError, match=r"0 of 1 engines registered") as info:
        pool.start_sync()
    assert time.monotonic() - began < 15
    error = info.value
    assert len(error.pending) == 1 and error.pending[0] in str(error)
    assert 'qw (reason: cannot run in PE "smp" because it only offers' in str(error)
    pool.stop_sync()
    assert sge_jobs(pool.name) == []


def test_job_in_error_state_reports_sges_reason_and_is_deleted() -> None:
    # SGE cannot chdir to the job's directory: the job stays queued in state Eqw
    need_sge()
    pool = pxpool.Pool.from_profile(
        "sge", engines=1, queue=SGE_QUEUE, directives=["-wd /nonexistent/pxpool"]
    )
    began = time.monotonic()
    with pytest.raises(pxpool.JobFailedError, match=r"ended in state Eqw \(error state: ") as info:
        pool.start_sync()
    assert time.monotonic() - began < 20  # reported when SGE gives up, not at the timeout
    assert "can't chdir to /nonexistent/pxpool" in str(info.value)
    pool.stop_sync()
    assert sge_jobs(pool.name) == []


def test_pool_started_by_the_cli_is_stopped_by_name_from_another_process() -> None:
    # `pxpool stop` rebuilds the pool's jobs from its cluster file, then deletes them
    need_sge()
    cli = [sys.executable, "-m", "pxpool.cli"]
    name = "sge-cli"
    started = subprocess.run(
        [*cli, "start", "sge", "-n", "2", "--name", name, "--set", f"queue={SGE_QUEUE}"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    try:
        assert started.returncode == 0, started.stderr
        assert len(sge_jobs(name)) == 2
    finally:
        stopped = subprocess.run(
            [*cli, "stop", name], capture_output=True, text=True, timeout=60, check=False
        )
    assert stopped.returncode == 0, stopped.stderr
    assert sge_jobs(name) == []
