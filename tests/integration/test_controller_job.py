"""``controller.location = "job"`` on the real SLURM of ``infra/slurm.sh``: the
controller runs inside a SLURM job of its own, engines in theirs; a controller job
that fails or cannot start is reported within a bounded wait; after every stop squeue
lists none of the pool's jobs (and the leak check finds no controller process).
The same on the other batch systems: real SGE, PBS (an emulation: slurm-wlm-torque's
qsub/qstat/qdel over that SLURM), and LSF and HTCondor through the stand-ins of
tests/standins (they cannot be installed here; the stand-ins run each job script on
this machine and print what the real commands print)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

import pxpool
from pxpool._core import runtime
from pxpool.engines import controller_alive
from pxpool.engines.batch_controller import ControllerJob

from .batch_helpers import (
    PBS_BIN,
    SGE_QUEUE,
    SLURM_PARTITION,
    STANDINS,
    need,
    need_sge,
    sge_jobs,
    slurm_jobs,
    standin_jobs,
)

pytestmark = pytest.mark.integration


QUEUE_DRAIN_SECONDS = 10.0


def controller_job_settings(**overrides: Any) -> dict[str, Any]:
    return {
        "engines": 2,
        "partition": SLURM_PARTITION,
        "controller_location": "job",
        "start_timeout": 60,
        **overrides,
    }


def controller_processes(pool: pxpool.Pool) -> list[psutil.Process]:
    """The pool's controller process(es), found by the profile dir they inherit."""
    pool_dir = str(runtime.pool_dir(pool.name))
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "pxpool._entry.controller_main" in " ".join(process.info["cmdline"] or []):
                if process.environ().get("IPP_PROFILE_DIR") == pool_dir:
                    found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def slurm_pool() -> Iterator[Any]:
    """Pools made here are stopped at the end, and squeue must list none of their jobs."""
    need("sbatch", "run `bash infra/up.sh` first")
    pools: list[pxpool.Pool] = []

    def make(**overrides: Any) -> pxpool.Pool:
        pool = pxpool.Pool.from_profile("slurm", **controller_job_settings(**overrides))
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.stop_sync()
        assert slurm_jobs(pool.name) == []
        assert controller_processes(pool) == []


def test_controller_runs_in_its_own_job_and_engines_answer(slurm_pool: Any) -> None:
    pool = slurm_pool()
    pool.start_sync()
    job = pool.provider.controller_job
    assert isinstance(job, ControllerJob) and job.job_id
    queued = {line.split()[1]: line.split()[0] for line in slurm_jobs(pool.name)}
    assert queued[f"pxpool-{pool.name}-controller"] == job.job_id
    engine_jobs = {pool.provider.job_id_of(i) for i in pool.ids}
    assert len(engine_jobs) == 2 and job.job_id not in engine_jobs
    controllers = controller_processes(pool)  # the hub and the schedulers it starts
    assert controllers and {p.environ()["SLURM_JOB_ID"] for p in controllers} == {job.job_id}
    assert sorted(pool.view().apply_sync(lambda: int(os.environ["SLURM_JOB_ID"]))) == sorted(
        int(j) for j in engine_jobs if j
    )
    pool.push({"k": 3})
    assert pool.pull("k") == [3, 3]
    script = pool.provider.controller_job_script(pool.name)
    assert f"--cluster-id={pool.name}" in script and "-m pxpool._entry.controller_main" in script
    pool.stop_sync()
    assert slurm_jobs(pool.name) == [] and controller_processes(pool) == []


def test_failing_controller_job_reports_its_state_and_output(slurm_pool: Any) -> None:
    pool = slurm_pool(prologue=["echo preparing the controller", "exit 4"], start_timeout=30)
    began = time.monotonic()
    with pytest.raises(
        pxpool.JobFailedError,
        match=r"SLURM job \d+ \(the pool's controller\) ended in state FAILED",
    ) as info:
        pool.start_sync()
    assert time.monotonic() - began < 20  # reported when the job ends, not at the timeout
    error = info.value
    assert error.controller and "exit code 4:0" in error.state
    assert "preparing the controller" in str(error)
    assert "pxpool: job script exited with status 4" in str(error)
    assert pool.state == "failed"


def test_controller_job_still_queued_at_the_timeout_says_why(slurm_pool: Any) -> None:
    # more CPUs than the one node has: SLURM keeps the job pending instead of rejecting it
    pool = slurm_pool(directives=["--cpus-per-task=9"], start_timeout=5)
    began = time.monotonic()
    with pytest.raises(
        pxpool.ControllerStartError,
        match=r"controller of pool '.*' is still PENDING \(reason: \w+\) after 5s",
    ):
        pool.start_sync()
    assert time.monotonic() - began < 15
    assert pool.state == "failed"


# system -> (profile overrides, the pool's jobs the scheduler still lists)
OTHER_SYSTEMS: dict[str, tuple[dict[str, Any], Callable[[str], list[str]]]] = {
    "pbs": ({"queue": SLURM_PARTITION}, slurm_jobs),
    "sge": ({"queue": SGE_QUEUE}, sge_jobs),
    "lsf": ({"queue": "normal"}, lambda name: standin_jobs(name, ["bjobs", "-noheader", "{id}"])),
    "htcondor": ({}, lambda name: standin_jobs(name, ["condor_q", "{id}", "-af", "JobStatus"])),
}


@pytest.fixture
def system_on_path(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> str:
    """The system's commands on PATH (skipped, with the reason, when they are missing)."""
    name = request.param
    if name == "pbs":
        need("qsub", "run `bash infra/pbs.sh install` first", path=PBS_BIN)
        need("sbatch", "run `bash infra/up.sh` first")
        monkeypatch.setenv("PATH", f"{PBS_BIN}{os.pathsep}{os.environ['PATH']}")
    elif name == "sge":
        need_sge()
    else:
        monkeypatch.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("PXPOOL_STANDIN_DIR", str(tmp_path))
    return str(name)


@pytest.mark.parametrize("system_on_path", list(OTHER_SYSTEMS), indirect=True)
def test_controller_runs_in_its_own_job_on_every_batch_system(system_on_path: str) -> None:
    overrides, queued = OTHER_SYSTEMS[system_on_path]
    pool = pxpool.Pool.from_profile(
        system_on_path, engines=2, controller_location="job", start_timeout=60, **overrides
    )
    try:
        pool.start_sync()
        job = pool.provider.controller_job
        assert isinstance(job, ControllerJob) and job.job_id
        engine_jobs = {pool.provider.job_id_of(i) for i in pool.ids}
        assert len(engine_jobs) == 2 and job.job_id not in engine_jobs
        assert len(queued(pool.name)) == 3  # the controller's job and the engines' two
        controllers = controller_processes(pool)
        assert controllers and all(p.pid != os.getpid() for p in controllers)
        assert sorted(pool.view().apply_sync(lambda: 6 * 7)) == [42, 42]
        pool.push({"k": 3})
        assert pool.pull("k") == [3, 3]
    finally:
        pool.stop_sync()
    # a cancelled job may be listed a moment longer while the scheduler completes it
    deadline = time.monotonic() + QUEUE_DRAIN_SECONDS
    while queued(pool.name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queued(pool.name) == [] and controller_processes(pool) == []


def test_pool_with_its_controller_in_a_job_is_running_for_attach_and_list(
    slurm_pool: Any,
) -> None:
    import subprocess
    import sys

    pool = slurm_pool(engines=1)
    pool.start_sync()
    assert controller_alive(pool.name)  # no local controller process, but its job
    attached = pxpool.Pool.attach(pool.name)
    try:
        assert attached.apply(sum, [6, 36]) == 42
    finally:
        attached.disconnect()
    listed = subprocess.run(
        [sys.executable, "-m", "pxpool.cli", "list"], capture_output=True, text=True, timeout=60
    )
    assert [pool.name, "slurm", "slurm", "running", "1"] in [
        line.split() for line in listed.stdout.splitlines()
    ], listed.stdout
    pool.stop_sync()
    assert not controller_alive(pool.name)
