"""The shared provider suite on the LSF provider. LSF cannot be installed on the test
machine: bsub/bjobs/bkill are stand-ins (tests/standins) that run the generated job
script here in the background and print what LSF prints, so the script itself, the
job-id and state parsing and the cancel path are what is tested."""

from __future__ import annotations

from typing import Any

import pytest

import pxpool

from .batch_helpers import BatchSuite, standin_jobs, standins_on_path

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("standins_on_path")]
__all__ = ["standins_on_path"]  # the fixture, used by name


class TestLSF(BatchSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self, standins_on_path: str) -> tuple[str, dict[str, Any]]:
        return ("lsf", {"queue": "normal", "memory": "500M", "start_timeout": 30})

    def queue(self, pool: pxpool.Pool) -> list[str]:
        return standin_jobs(pool.name, ["bjobs", "-noheader", "{id}"])


def test_job_that_fails_reports_lsf_state_and_output(standins_on_path: str) -> None:
    pool = pxpool.Pool.from_profile("lsf", engines=1, prologue=["exit 3"], start_timeout=20)
    with pytest.raises(
        pxpool.JobFailedError,
        match=r"LSF job \d+ \(engines \[0\]\) ended in state EXIT \(exit code 3\)",
    ):
        pool.start_sync()
    pool.stop_sync()
