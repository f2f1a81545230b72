"""Engines in IBM Spectrum LSF jobs (``bsub < script``, whose ``#BSUB`` lines LSF reads);
with ``controller.location = "job"`` the controller runs in a job of its own (one slot)."""

from __future__ import annotations

from collections.abc import Sequence

from .batch_controller import ControllerJobProvider
from .jobs import FINISHED, GONE, PENDING, RUNNING, UNKNOWN, JobSpec, JobStatus

_PENDING = {"PEND", "PSUSP", "WAIT"}
_RUNNING = {"RUN", "USUSP", "SSUSP", "PROV"}
_FINISHED = {"DONE", "EXIT"}


class LSFProvider(ControllerJobProvider):
    name = "lsf"
    system = "LSF"
    submit_command = "bsub"
    cancel_command = "bkill"
    directive_prefix = "#BSUB"
    job_id_pattern = r"Job <(\d+)> is submitted"

    def directives(self, spec: JobSpec) -> list[str]:
        batch = self.profile.batch
        slots = len(spec.engine_ids) * batch.cores_per_engine or 1  # 1: the controller's job
        found = [f"-J {spec.name}", f"-o {spec.output_file}", f"-n {slots}", '-R "span[hosts=1]"']
        if batch.queue:
            found.append(f"-q {batch.queue}")
        if batch.account:
            found.append(f"-P {batch.account}")
        if batch.walltime_seconds is not None:  # LSF's run limit is [hours:]minutes
            minutes = max(1, -(-batch.walltime_seconds // 60))
            found.append(f"-W {minutes // 60}:{minutes % 60:02d}")
        if (memory := self.memory_mb()) is not None:
            found.append(f"-M {memory}MB")
        return found

    def drain_directives(self, lead: int) -> list[str]:
        # the warning action (SIGUSR1) comes this long before the run limit or a
        # bkill; LSF counts it in whole minutes
        return ["-wa USR1", f"-wt {max(1, -(-lead // 60))}"]

    def write_job_files(
        self, spec: JobSpec, commands: Sequence[str] | None = None
    ) -> tuple[list[str], str | None]:
        script = self.render(spec, commands)
        self._write(spec.script_file, script, executable=True)
        return [self.submit_command], script  # bsub reads #BSUB lines only from stdin

    @classmethod
    def status_argv(cls, job_id: str) -> list[str]:
        return ["bjobs", "-noheader", "-o", "stat exit_code pend_reason delimiter='|'", job_id]

    @classmethod
    def parse_status(cls, job_id: str, code: int, stdout: str, stderr: str) -> JobStatus:
        if "is not found" in stdout + stderr:
            return JobStatus("gone", GONE)
        fields = (stdout.strip().splitlines() or [""])[0].split("|")
        word = fields[0].strip()
        if code != 0 or not word:
            return JobStatus("no answer", UNKNOWN)
        exit_code = fields[1].strip() if len(fields) > 1 else "-"
        reason = fields[2].strip() if len(fields) > 2 else "-"
        if word in _PENDING:
            return JobStatus(word, PENDING, "" if reason == "-" else reason)
        if word in _FINISHED:
            return JobStatus(word, FINISHED, "" if exit_code == "-" else f"exit code {exit_code}")
        return JobStatus(word, RUNNING if word in _RUNNING else UNKNOWN)
