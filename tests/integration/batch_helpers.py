"""Shared pieces of the batch-provider tests: the queue as each scheduler lists it,
and the ProviderSuite with a leftovers() that asks the scheduler."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import pxpool

from .provider_suite import ProviderSuite

SLURM_PARTITION = os.environ.get("PXPOOL_TEST_SLURM_PARTITION", "debug")
SGE_QUEUE = os.environ.get("PXPOOL_TEST_SGE_QUEUE", "all.q")


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


def need_sge() -> None:
    """Skip unless ``qsub`` on PATH is Grid Engine's (not the PBS emulation's) and answers."""
    try:
        result = subprocess.run(
            ["qstat", "-help"], capture_output=True, text=True, timeout=20, check=False
        )
    except FileNotFoundError:
        pytest.skip("qstat not found; run `bash infra/sge.sh install && bash infra/sge.sh start`")
    if not result.stdout.startswith("SGE"):
        pytest.skip(f"qstat on PATH is not Grid Engine's: {result.stdout[:60]!r}")
    if subprocess.run(["qstat"], capture_output=True, timeout=20, check=False).returncode != 0:
        pytest.skip("sge_qmaster does not answer; run `bash infra/sge.sh start`")


def sge_jobs(pool_name: str) -> list[str]:
    """This pool's jobs in any state qstat lists ("id name state"); full names from -xml,
    as the plain listing cuts names at 10 characters."""
    result = subprocess.run(
        ["qstat", "-xml"], capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, f"qstat -xml: {result.stderr}"
    found = []
    for job in ET.fromstring(result.stdout).iter("job_list"):
        name = job.findtext("JB_name", "")
        if name.startswith(f"pxpool-{pool_name}-"):
            found.append(f"{job.findtext('JB_job_number')} {name} {job.findtext('state')}")
    return found


class BatchSuite(ProviderSuite):
    """The shared suite; ``queue`` lists the pool's jobs still known to the scheduler."""

    def queue(self, pool: pxpool.Pool) -> list[str]:
        raise NotImplementedError

    def leftovers(self, pool: pxpool.Pool) -> list[str]:
        return self.queue(pool)


STANDINS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "standins")


@pytest.fixture(scope="class")
def standins_on_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LSF and HTCondor cannot be installed here: their commands are the stand-ins in
    tests/standins, which run each job script on this machine (see _batch_standin.py)."""
    state = tmp_path_factory.mktemp("standin-jobs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
        patch.setenv("PXPOOL_STANDIN_DIR", str(state))
        yield str(state)


def standin_jobs(pool_name: str, status_argv: Sequence[str]) -> list[str]:
    """Jobs of this pool that the stand-in status command still lists as queued/running."""
    state = os.environ.get("PXPOOL_STANDIN_DIR", "")
    found = []
    for folder in sorted(Path(state).iterdir()) if state else []:
        script = folder / "script.sh"
        if script.is_file() and f"IPP_CLUSTER_ID={pool_name}\n" in script.read_text():
            argv = [a.replace("{id}", folder.name) for a in status_argv]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            if result.stdout.strip() and not result.stdout.startswith(("DONE", "EXIT")):
                found.append(f"{folder.name}: {result.stdout.strip()}")
    return found


PBS_BIN = os.environ.get("PXPOOL_TEST_PBS_BIN", "/opt/pxpool-torque/usr/bin")


@pytest.fixture(scope="class")
def pbs_on_path() -> Iterator[str]:
    """PBS here is an emulation: slurm-wlm-torque's qsub/qstat/qdel over the test SLURM,
    unpacked by `infra/pbs.sh install` and put on PATH only for these tests."""
    need("qsub", "run `bash infra/pbs.sh install` first", path=PBS_BIN)
    need("sbatch", "run `bash infra/up.sh` first")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{PBS_BIN}{os.pathsep}{os.environ['PATH']}")
        yield PBS_BIN
