"""The shared provider suite on SLURM 22.05 (``infra/slurm.sh``: one node, 8 CPUs),
once with one engine per job started by ``srun`` and once with two engines per job
started plainly; after the pool stops, squeue lists none of its jobs."""

from __future__ import annotations

from typing import Any

import pytest

import pxpool

from .batch_helpers import SLURM_PARTITION, BatchSuite, need, slurm_jobs

pytestmark = pytest.mark.integration


class TestSlurmSrun(BatchSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        need("sbatch", "run `bash infra/up.sh` first")
        return ("slurm", {"partition": SLURM_PARTITION, "start_timeout": 60})

    def queue(self, pool: pxpool.Pool) -> list[str]:
        return slurm_jobs(pool.name)

    def test_each_engine_runs_in_its_own_job(self, pool: pxpool.Pool) -> None:
        jobs = {pool.provider.job_id_of(i) for i in pool.ids}
        assert None not in jobs and len(jobs) == self.engines
        assert sorted(line.split()[0] for line in self.queue(pool)) == sorted(jobs)


class TestSlurmTwoEnginesPerJob(BatchSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        need("sbatch", "run `bash infra/up.sh` first")
        return (
            "slurm",
            {
                "partition": SLURM_PARTITION,
                "engines_per_job": 2,
                "launcher": "plain",
                "memory": "200M",
                "walltime": "00:10:00",
                "start_timeout": 60,
            },
        )

    def queue(self, pool: pxpool.Pool) -> list[str]:
        return slurm_jobs(pool.name)

    def test_engines_share_one_job(self, pool: pxpool.Pool) -> None:
        assert pool.provider.job_id_of(0) == pool.provider.job_id_of(1) is not None
