"""Engines in HTCondor jobs: a submit description whose executable is the job script;
with ``controller.location = "job"`` the controller runs in a job of its own (one cpu)."""

from __future__ import annotations

from collections.abc import Sequence

from .batch_controller import ControllerJobProvider
from .jobs import FINISHED, GONE, PENDING, RUNNING, UNKNOWN, JobSpec, JobStatus

# JobStatus codes of a job ClassAd
_STATES = {
    "1": ("Idle", PENDING),
    "2": ("Running", RUNNING),
    "3": ("Removed", FINISHED),
    "4": ("Completed", FINISHED),
    "5": ("Held", PENDING),
    "6": ("Transferring output", RUNNING),
    "7": ("Suspended", RUNNING),
}


class HTCondorProvider(ControllerJobProvider):
    name = "htcondor"
    system = "HTCondor"
    submit_command = "condor_submit"
    cancel_command = "condor_rm"
    directive_prefix = ""  # the settings live in the submit description, not the script
    job_id_pattern = r"submitted to cluster (\d+)"
    output_in_script = True

    def directives(self, spec: JobSpec) -> list[str]:
        return []

    def description(self, spec: JobSpec) -> str:
        """The submit description: one job running the script with the caller's environment."""
        batch = self.profile.batch
        lines = [
            "universe = vanilla",
            f"executable = {spec.script_file}",
            f"batch_name = {spec.name}",
            "getenv = True",
            f"request_cpus = {len(spec.engine_ids) * batch.cores_per_engine or 1}",
        ]
        if (memory := self.memory_mb()) is not None:
            lines.append(f"request_memory = {memory}MB")
        if batch.walltime_seconds is not None:
            lines.append(
                "periodic_remove = (JobStatus == 2) && "
                f"(time() - EnteredCurrentStatus > {batch.walltime_seconds})"
            )
        if batch.walltime_signal > 0:  # SIGTERM on removal, then this long until SIGKILL
            lines += ["kill_sig = SIGTERM", f"job_max_vacate_time = {batch.walltime_signal}"]
        lines += list(batch.directives)
        lines.append("queue 1")
        return "\n".join(lines) + "\n"

    def write_job_files(
        self, spec: JobSpec, commands: Sequence[str] | None = None
    ) -> tuple[list[str], str | None]:
        self._write(spec.script_file, self.render(spec, commands), executable=True)
        description = spec.script_file.removesuffix(".sh") + ".sub"
        self._write(description, self.description(spec))
        return [self.submit_command, description], None

    def show_job(self, spec: JobSpec, commands: Sequence[str] | None = None) -> str:
        """The submit description, then the script it runs."""
        description = spec.script_file.removesuffix(".sh") + ".sub"
        script = self.render(spec, commands)
        return f"# {description}\n{self.description(spec)}\n# {spec.script_file}\n{script}"

    @classmethod
    def status_argv(cls, job_id: str) -> list[str]:
        return ["condor_q", job_id, "-af", "JobStatus", "HoldReason"]

    @classmethod
    def parse_status(cls, job_id: str, code: int, stdout: str, stderr: str) -> JobStatus:
        if code != 0:
            return JobStatus("no answer", UNKNOWN)
        line = stdout.strip()
        if not line:  # condor_q lists only jobs still in the queue
            return JobStatus("gone", GONE)
        number, _, hold_reason = line.partition(" ")
        word, kind = _STATES.get(number, (f"JobStatus {number}", UNKNOWN))
        reason = hold_reason.strip() if hold_reason.strip() != "undefined" else ""
        return JobStatus(word, kind, reason)
