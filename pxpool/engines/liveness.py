"""Whether a pool's controller still runs, also when it runs in a batch job.

A local controller is a process on this machine (:mod:`pxpool._core.runtime` checks
its pid). A controller in a batch job (``controller.location = "job"``) is alive
while its connection files exist and its scheduler still lists the job as queued or
running; only the provider of that batch system knows how to ask, hence this module.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from .._core import runtime
from .jobs import FINISHED, GONE, batch_system

__all__ = ["controller_alive", "controller_job_alive"]

JOB_STATUS_TIMEOUT = 5.0  # seconds the scheduler gets to say whether a controller job runs


def controller_alive(name: str, jobs: bool = True) -> bool:
    """Whether the pool's controller (from its cluster file) still runs: its local
    process, or with ``jobs`` a controller running in a batch job
    (see :func:`controller_job_alive`)."""
    state = runtime.controller_state(name)
    if state is None:
        return False
    if runtime.controller_in_job(state):
        return jobs and controller_job_alive(state)
    return runtime.controller_process_alive(state)


def controller_job_alive(state: dict[str, Any]) -> bool:
    """A controller in a batch job runs while its connection files exist and the
    scheduler still lists its job as queued or running. A scheduler that gives no
    answer within JOB_STATUS_TIMEOUT cannot prove the pool gone: that counts as
    alive (attaching then fails on the connection, with the reason)."""
    system = batch_system(str(state["provider_name"]))
    if system is None:
        return False
    folder = Path(str(state.get("profile_dir", ""))) / "security"
    stem = f"ipcontroller-{state.get('cluster_id', '')}"
    if not all((folder / f"{stem}-{part}.json").exists() for part in ("client", "engine")):
        return False
    job_id = str(state["job_id"])
    try:
        done = subprocess.run(
            system.status_argv(job_id),
            capture_output=True,
            text=True,
            timeout=JOB_STATUS_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return True
    status = system.parse_status(job_id, done.returncode, done.stdout, done.stderr)
    return status.kind not in (FINISHED, GONE)
