"""Engines in PBS/Torque jobs (``qsub``, ``#PBS`` lines); with
``controller.location = "job"`` the controller runs in a job of its own (one core)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .batch_controller import ControllerJobProvider
from .jobs import FINISHED, GONE, PENDING, RUNNING, UNKNOWN, JobSpec, JobStatus

_PENDING = {"Q", "H", "W", "T", "S"}
_RUNNING = {"R", "E", "B"}
_FINISHED = {"C", "F", "X"}


class PBSProvider(ControllerJobProvider):
    name = "pbs"
    system = "PBS"
    submit_command = "qsub"
    cancel_command = "qdel"
    directive_prefix = "#PBS"
    job_id_pattern = r"^\s*(\d+(?:\.\S+)?)\s*$"

    def directives(self, spec: JobSpec) -> list[str]:
        batch = self.profile.batch
        slots = len(spec.engine_ids) * batch.cores_per_engine or 1  # 1: the controller's job
        found = [f"-N {spec.name}", f"-o {spec.output_file}", "-j oe", f"-l nodes=1:ppn={slots}"]
        if batch.queue:
            found.append(f"-q {batch.queue}")
        if batch.account:
            found.append(f"-A {batch.account}")
        if batch.walltime_seconds is not None:
            found.append(f"-l walltime={self.walltime_text(batch.walltime_seconds)}")
        if (memory := self.memory_mb()) is not None:
            found.append(f"-l mem={memory}mb")
        return found

    def write_job_files(
        self, spec: JobSpec, commands: Sequence[str] | None = None
    ) -> tuple[list[str], str | None]:
        argv, stdin = super().write_job_files(spec, commands)
        # -o/-e again on the command line: some PBS flavours (and Torque emulations)
        # ignore #PBS -o and write the output into the directory qsub ran in
        return [argv[0], "-o", spec.output_file, "-e", spec.output_file, *argv[1:]], stdin

    @classmethod
    def status_argv(cls, job_id: str) -> list[str]:
        return ["qstat", "-f", job_id]

    @classmethod
    def parse_status(cls, job_id: str, code: int, stdout: str, stderr: str) -> JobStatus:
        state = re.search(r"^\s*job_state\s*=\s*(\S+)", stdout, re.M)
        if state is None:
            gone = code != 0 and ("Unknown Job" in stderr or not stderr.strip())
            return JobStatus("gone", GONE) if gone else JobStatus("no answer", UNKNOWN)
        word = state[1]
        exit_status = re.search(r"^\s*[Ee]xit_status\s*=\s*(\S+)", stdout, re.M)
        comment = re.search(r"^\s*comment\s*=\s*(.+)$", stdout, re.M)
        if word in _FINISHED:
            why = f"exit status {exit_status[1]}" if exit_status else ""
            return JobStatus(word, FINISHED, why)
        kind = PENDING if word in _PENDING else RUNNING if word in _RUNNING else UNKNOWN
        return JobStatus(word, kind, comment[1].strip() if comment and kind == PENDING else "")
