"""The shared provider suite on the HTCondor provider. HTCondor cannot be installed on the test
machine: condor_submit/condor_q/condor_rm are stand-ins (tests/standins) that run the generated job
script here in the background and print what HTCondor prints, so the script itself, the
job-id and state parsing and the cancel path are what is tested."""

from __future__ import annotations

from typing import Any

import pytest

import pxpool

from .batch_helpers import BatchSuite, standin_jobs, standins_on_path

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("standins_on_path")]
__all__ = ["standins_on_path"]  # the fixture, used by name


class TestHTCondor(BatchSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self, standins_on_path: str) -> tuple[str, dict[str, Any]]:
        return ("htcondor", {"memory": "500M", "start_timeout": 30})

    def queue(self, pool: pxpool.Pool) -> list[str]:
        return standin_jobs(pool.name, ["condor_q", "{id}", "-af", "JobStatus"])


def test_job_that_fails_reports_that_it_left_the_queue_and_its_output(
    standins_on_path: str,
) -> None:
    pool = pxpool.Pool.from_profile("htcondor", engines=1, prologue=["exit 3"], start_timeout=20)
    with pytest.raises(
        pxpool.JobFailedError,
        match=r"HTCondor job \d+ \(engines \[0\]\) ended in state left the queue",
    ) as info:
        pool.start_sync()
    assert "exited with status 3" in str(info.value)
    pool.stop_sync()
