"""Engines in Sun/Son of Grid Engine jobs (``qsub`` reading ``#$`` lines).

ipyparallel's SGE launcher writes ``#PBS`` lines, which SGE ignores (its output then
lands in ``$HOME``); these are SGE's own directives. With ``controller.location =
"job"`` the controller runs in a job of its own (one slot).
"""

from __future__ import annotations

import asyncio
import time

from .batch_controller import ControllerJob, ControllerJobProvider
from .jobs import (
    FINISHED,
    GONE,
    PENDING,
    RUNNING,
    UNKNOWN,
    BatchJob,
    JobSpec,
    JobStatus,
    run_command,
)


class SGEJob(BatchJob):
    """A job that failed to start stays queued in an error state (``Eqw``) until
    deleted: it counts as ended for the start-up report, and stop() deletes it."""

    # How the cluster file names this class: ipyparallel writes "module:Class" for a
    # launcher without an entry point, which its own loader cannot import.
    entrypoint_name = "pxpool.engines.sge.SGEJob"

    async def stop(self) -> None:
        if self._in_error_state():
            await run_command(self.system.cancel_argv(self.job_id), self.submit_timeout)
            deadline = time.monotonic() + self.cancel_timeout
            while time.monotonic() < deadline and (await self.poll()).kind != GONE:
                await asyncio.sleep(0.2)
        await super().stop()

    def _in_error_state(self) -> bool:
        status = self.status
        return bool(self.job_id) and status is not None and status.kind == FINISHED


class SGEControllerJob(ControllerJob, SGEJob):
    """The controller's job; in ``Eqw`` it is deleted on stop, as an engine job is."""

    entrypoint_name = "pxpool.engines.sge.SGEControllerJob"


class SGEProvider(ControllerJobProvider):
    name = "sge"
    system = "SGE"
    submit_command = "qsub"
    cancel_command = "qdel"
    directive_prefix = "#$"
    job_id_pattern = r"Your job (\d+)"
    engine_launcher_class = SGEJob
    controller_job_class = SGEControllerJob

    def directives(self, spec: JobSpec) -> list[str]:
        batch = self.profile.batch
        slots = len(spec.engine_ids) * batch.cores_per_engine  # 0: the controller's job
        found = [
            f"-N {spec.name}",
            f"-o {spec.output_file}",
            "-j y",
            "-S /bin/bash",
            "-cwd",
            "-V",  # the submitting environment, as sbatch passes it by default
        ]
        if slots > 1:
            found.append(f"-pe {batch.pe or 'smp'} {slots}")
        if batch.queue:
            found.append(f"-q {batch.queue}")
        if batch.account:
            found.append(f"-A {batch.account}")
        if batch.walltime_seconds is not None:
            found.append(f"-l h_rt={self.walltime_text(batch.walltime_seconds)}")
        if (memory := self.memory_mb()) is not None:
            found.append(f"-l mem_free={memory}M")
        return found

    def drain_directives(self, lead: int) -> list[str]:
        # SIGUSR1 when the soft runtime limit s_rt (lead seconds before h_rt) passes,
        # SIGKILL the queue's `notify` time later; -notify: SIGUSR2 before a qdel's
        # SIGKILL and SIGUSR1 before a suspension
        found = ["-notify"]
        walltime = self.profile.batch.walltime_seconds
        if walltime is not None and walltime > lead:
            found.append(f"-l s_rt={self.walltime_text(walltime - lead)}")
        return found

    @classmethod
    def status_argv(cls, job_id: str) -> list[str]:
        # The user's jobs (a job that ended is no longer listed), then `qstat -j` for
        # the scheduler's reason a job waits ("scheduling info:"), in one call.
        script = f'qstat || exit; echo "{_DETAILS}"; qstat -j "$1" 2>&1; exit 0'
        return ["sh", "-c", script, "sh", job_id]

    @classmethod
    def parse_status(cls, job_id: str, code: int, stdout: str, stderr: str) -> JobStatus:
        if code != 0:
            return JobStatus("no answer", UNKNOWN)
        listing, _, details = stdout.partition(_DETAILS)
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[0] == job_id:
                word = fields[4]
                if "E" in word:  # Eqw: stays queued in error; report it, qdel removes it
                    why = _detail(details, "error reason") or f"see `qstat -j {job_id}`"
                    return JobStatus(word, FINISHED, f"error state: {why}")
                if "q" in word or "h" in word:
                    return JobStatus(word, PENDING, _detail(details, "scheduling info"))
                return JobStatus(word, RUNNING)
        return JobStatus("gone", GONE)


_DETAILS = "--- qstat -j ---"


def _detail(details: str, key: str) -> str:
    """The text after ``key ...:`` in ``qstat -j`` output, with its continuation lines
    joined by "; " (empty when the scheduler does not collect it)."""
    found: list[str] = []
    for line in details.splitlines():
        if found and line[:1].isspace() and line.strip():
            found.append(line.strip())
        elif found:
            break
        elif line.startswith(key) and ":" in line:
            found.append(line.split(":", 1)[1].strip())
    reason = "; ".join(part for part in found if part)
    return "" if "turned off" in reason else reason
