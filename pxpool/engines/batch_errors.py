"""What can go wrong between ``pool.start()`` and engines registering from batch jobs.

Each error carries the facts a user needs without opening a log: the command and
its output for a submit, the job id, final state and output tail for a job that
ended, and the scheduler's own reason for jobs still waiting::

    PoolStartError
    ├── SubmitCommandNotFound   sbatch/qsub/bsub/condor_submit is not on PATH
    ├── SubmitRejected          the submit command failed or printed no job id
    └── EngineStartError
        ├── JobFailedError      a job ended before all its engines registered (or,
        │                       for a controller job, before its connection files)
        └── EnginesMissingError fewer engines than asked before the start timeout
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import EngineStartError, PoolStartError, tail

__all__ = [
    "SubmitCommandNotFound",
    "SubmitRejected",
    "JobFailedError",
    "EnginesMissingError",
]


class SubmitCommandNotFound(PoolStartError):
    """The batch system's submit command is not on ``PATH``."""

    def __init__(self, command: str, profile: str, provider: str, path: str) -> None:
        self.command = command
        self.profile = profile
        super().__init__(
            f"Cannot submit engine jobs for profile {profile!r}: the {provider} submit command "
            f"{command!r} is not on PATH ({path or '(empty)'}). Run pxpool on a machine where "
            f"`{command}` works (a login node), or load its module before starting the pool; "
            f"`pxpool script {profile}` prints the job script without submitting it."
        )


class SubmitRejected(PoolStartError):
    """The submit command exited with an error, timed out, or printed no job id."""

    def __init__(
        self,
        command: Sequence[str],
        exit_code: int | None,
        stdout: str,
        stderr: str,
        profile: str,
        problem: str = "",
    ) -> None:
        self.command = list(command)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.profile = profile
        what = problem or f"exited with code {exit_code}"
        super().__init__(
            f"Submitting an engine job failed: `{' '.join(self.command)}` {what}.\n"
            f"  stdout:\n{tail(stdout) or '    (empty)'}\n"
            f"  stderr:\n{tail(stderr) or '    (empty)'}\n"
            f"Check queue/partition, account, walltime, memory and directives in profile "
            f"{profile!r}; `pxpool script {profile}` prints the script that was submitted."
        )


class JobFailedError(EngineStartError):
    """A batch job left the queue or failed before all of its engines registered."""

    def __init__(
        self,
        job_id: str,
        state: str,
        output: str,
        *,
        system: str,
        engine_ids: Sequence[int],
        output_file: str,
        profile: str,
        controller: bool = False,
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.engine_ids = list(engine_ids)
        self.output_file = output_file
        self.controller = controller  # the controller's own job (controller.location = "job")
        what, before = (
            ("the pool's controller", "the controller wrote its connection files")
            if controller
            else (f"engines {self.engine_ids}", "its engines registered")
        )
        super().__init__(
            f"{system} job {job_id} ({what}) ended in state {state} before {before}; "
            f"its output file is {output_file}. Fix the prologue, "
            f"python or directives in profile {profile!r} (see `pxpool script {profile}`) "
            "and start the pool again.",
            output or "(the job wrote no output)",
        )


class EnginesMissingError(EngineStartError):
    """Fewer engines registered than asked before the start timeout; jobs still wait."""

    def __init__(
        self,
        registered: Sequence[int],
        wanted: Sequence[int],
        timeout: float,
        jobs: dict[str, tuple[str, str]],
        pending: Sequence[str],
        *,
        system: str,
        profile: str,
    ) -> None:
        self.registered = sorted(registered)
        self.wanted = sorted(wanted)
        self.jobs = dict(jobs)  # job id -> (state, scheduler's reason)
        self.pending = list(pending)
        lines = "\n".join(
            f"    job {job_id}: {state}" + (f" (reason: {reason})" if reason else "")
            for job_id, (state, reason) in self.jobs.items()
        )
        super().__init__(
            f"{len(self.registered)} of {len(self.wanted)} engines registered within "
            f"{timeout:g}s; missing: {sorted(set(self.wanted) - set(self.registered))}. "
            f"{system} jobs still pending: {', '.join(self.pending) or '(none)'}.\n"
            f"  Jobs of these engines:\n{lines or '    (none known)'}\n"
            f"Ask for fewer cores or less memory, another queue, or raise timeouts.start "
            f"in profile {profile!r}."
        )
