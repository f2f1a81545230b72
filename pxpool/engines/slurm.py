"""Engines in SLURM jobs (sbatch), started inside the job by srun, mpiexec or plainly;
with ``controller.location = "job"`` the controller runs in a job of its own."""

from __future__ import annotations

import re

from .batch_controller import ControllerJobProvider
from .jobs import FINISHED, GONE, PENDING, RUNNING, UNKNOWN, JobSpec, JobStatus

_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}


class SlurmProvider(ControllerJobProvider):
    name = "slurm"
    system = "SLURM"
    submit_command = "sbatch"
    cancel_command = "scancel"
    directive_prefix = "#SBATCH"
    job_id_pattern = r"Submitted batch job (\d+)"
    launchers = ("plain", "srun", "mpiexec")

    def directives(self, spec: JobSpec) -> list[str]:
        batch = self.profile.batch
        found = [
            f"--job-name={spec.name}",
            f"--output={spec.output_file}",
            f"--ntasks={len(spec.engine_ids) or 1}",  # no engines: the controller's job
            f"--cpus-per-task={batch.cores_per_engine if spec.engine_ids else 1}",
        ]
        if batch.launcher == "plain":  # background processes of one shell share its node
            found.append("--nodes=1")
        if batch.queue:
            found.append(f"--partition={batch.queue}")
        if batch.account:
            found.append(f"--account={batch.account}")
        if batch.walltime_seconds is not None:
            found.append(f"--time={self.walltime_text(batch.walltime_seconds)}")
        if (memory := self.memory_mb()) is not None:
            found.append(f"--mem={memory}M")
        return found

    def drain_directives(self, lead: int) -> list[str]:
        # B: signals the job's shell only, which passes it on to the engines (without
        # B:, SLURM signals srun steps but not engines started plainly by the shell);
        # SLURM may send it up to a minute early (its event loop's resolution)
        return [f"--signal=B:USR1@{lead}"]

    @classmethod
    def status_argv(cls, job_id: str) -> list[str]:
        # scontrol, not squeue: squeue forgets a failed job at once, scontrol keeps its
        # final state and exit code for MinJobAge seconds
        return ["scontrol", "show", "job", "-o", job_id]

    @classmethod
    def parse_status(cls, job_id: str, code: int, stdout: str, stderr: str) -> JobStatus:
        if code != 0:
            gone = "Invalid job id" in stderr
            return JobStatus("gone" if gone else "no answer", GONE if gone else UNKNOWN)
        state = re.search(r"\bJobState=(\S+)", stdout)
        if state is None:
            return JobStatus("no answer", UNKNOWN)
        reason = re.search(r"\bReason=(\S+)", stdout)
        exit_code = re.search(r"\bExitCode=(\S+)", stdout)
        word = state[1]
        kind = PENDING if word in _PENDING else RUNNING if word in _RUNNING else FINISHED
        why = reason[1] if reason and reason[1] != "None" else ""
        if kind == FINISHED and exit_code and exit_code[1] != "0:0":
            why = ", ".join(filter(None, [why, f"exit code {exit_code[1]}"]))
        return JobStatus(word, kind, why)
