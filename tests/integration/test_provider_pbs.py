"""The shared provider suite on the PBS provider. There is no real PBS for Debian 12:
this is an emulation, slurm-wlm-torque's qsub/qstat/qdel over the SLURM of
``infra/slurm.sh`` (``infra/pbs.sh``). It ignores ``#PBS -o`` and sets no PBS_JOBID;
the jobs run for real, and after the pool stops neither qstat nor squeue lists them."""

from __future__ import annotations

import time
from typing import Any

import pytest

import pxpool

from .batch_helpers import SLURM_PARTITION, BatchSuite, pbs_on_path, slurm_jobs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("pbs_on_path")]
__all__ = ["pbs_on_path"]  # the fixture, used by name


class TestPBS(BatchSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self, pbs_on_path: str) -> tuple[str, dict[str, Any]]:
        return ("pbs", {"queue": SLURM_PARTITION, "walltime": "00:10:00", "start_timeout": 60})

    def queue(self, pool: pxpool.Pool) -> list[str]:
        return slurm_jobs(pool.name)

    def leftovers(self, pool: pxpool.Pool) -> list[str]:
        """The emulation's qstat says ``C`` for a job SLURM still lists as completing
        (its epilog running), and pxpool's stop rightly takes ``C`` as done: allow
        SLURM a few seconds to finish completing it."""
        deadline = time.monotonic() + 15
        while (left := self.queue(pool)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def test_qstat_lists_the_running_jobs(self, pool: pxpool.Pool) -> None:
        import subprocess

        jobs = {pool.provider.job_id_of(i) for i in pool.ids}
        listed = subprocess.run(["qstat"], capture_output=True, text=True, timeout=20).stdout
        assert all(job is not None and job in listed for job in jobs)


def test_job_that_fails_reports_pbs_state_and_output(pbs_on_path: str) -> None:
    pool = pxpool.Pool.from_profile(
        "pbs", engines=1, queue=SLURM_PARTITION, prologue=["echo no python here", "exit 3"]
    )
    with pytest.raises(pxpool.JobFailedError, match=r"PBS job \d+ \(engines \[0\]\) ended") as info:
        pool.start_sync()
    assert "no python here" in str(info.value) and "exited with status 3" in str(info.value)
    pool.stop_sync()
    assert slurm_jobs(pool.name) == []
