"""Batch jobs: what one job of engines (or the controller) is, and how it is watched.

A job is an ipyparallel launcher (:class:`BatchJob`) kept in ``cluster.engines``:
the cluster file records its job id, so ``pxpool stop`` from another process cancels
it too. While it runs it is polled; a job that ends early or is still queued at the
deadline is reported with the scheduler's own words (:class:`JobStatus`). Which
commands a job runs (submit, status, cancel) its batch system's provider class says
(:class:`BatchSystem`), found by the provider name the cluster file records; the
providers themselves are in :mod:`.batch` and the systems' modules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import ipyparallel as ipp
from ipyparallel.cluster.launcher import BaseLauncher
from traitlets import Any as AnyTrait
from traitlets import Float, List, Unicode

from ..errors import ProfileError
from .errors import EnginesMissingError, JobFailedError, SubmitRejected

__all__ = [
    "BatchJob",
    "BatchSystem",
    "JobSpec",
    "JobState",
    "JobStatus",
    "batch_system",
    "register_batch_system",
    "run_command",
    "shut_engines_down",
    "EndsOnStop",
    "PENDING",
    "RUNNING",
    "FINISHED",
    "GONE",
    "UNKNOWN",
]

log = logging.getLogger("pxpool.jobs")
POLL_FIRST = 0.5  # seconds between status polls, growing to POLL_MAX
POLL_MAX = 5.0
STATUS_TIMEOUT = 15.0


class JobState(StrEnum):
    """What a scheduler's state word means for pxpool (``JobStatus.kind``)."""

    PENDING = "pending"  # queued, held, or starting
    RUNNING = "running"
    FINISHED = "finished"  # ended: completed, failed, cancelled, timed out
    GONE = "gone"  # the scheduler no longer knows the job
    UNKNOWN = "unknown"  # no answer, or a word pxpool does not know


PENDING, RUNNING, FINISHED = JobState.PENDING, JobState.RUNNING, JobState.FINISHED
GONE, UNKNOWN = JobState.GONE, JobState.UNKNOWN


@dataclass(frozen=True)
class JobStatus:
    """One look at a job: the scheduler's state word, its reason, and what it means."""

    state: str  # the scheduler's own word ("PD", "qw", "R", ...)
    kind: JobState
    reason: str = ""

    def describe(self) -> str:
        return f"{self.state} ({self.reason})" if self.reason else self.state


@dataclass(frozen=True)
class JobSpec:
    """Everything that differs between the jobs of one pool."""

    name: str
    engine_ids: tuple[int, ...]
    pool_dir: str
    cluster_id: str
    script_file: str
    output_file: str


class BatchSystem(Protocol):
    """What a job asks of its batch system: a provider class (see :mod:`.batch`),
    whose names and class methods say how to talk to the scheduler."""

    @property
    def system(self) -> str:
        """The batch system's name in messages (``SLURM``)."""

    @property
    def job_id_pattern(self) -> str:
        """Group 1 is the job id in the submit command's stdout."""

    def status_argv(self, job_id: str) -> list[str]: ...

    def parse_status(self, job_id: str, code: int, stdout: str, stderr: str) -> JobStatus: ...

    def cancel_argv(self, job_id: str) -> list[str]: ...


_SYSTEMS: dict[str, BatchSystem] = {}  # provider name -> its provider class


def register_batch_system(provider_name: str, system: BatchSystem) -> None:
    """Make ``system`` the batch system of jobs whose cluster file names
    ``provider_name`` (every batch provider class registers itself)."""
    _SYSTEMS[provider_name] = system


def batch_system(provider_name: str) -> BatchSystem | None:
    """The batch system of provider ``provider_name``; None for a provider that
    submits no jobs."""
    return _SYSTEMS.get(provider_name)


async def run_command(
    argv: Sequence[str], timeout: float, stdin: str | None = None
) -> tuple[int | None, str, str]:
    """Run ``argv``; return (exit code, stdout, stderr), exit code None after ``timeout``."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        return None, "", f"(no answer within {timeout:g}s)"
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def shut_engines_down(
    client: ipp.Client | None, engine_ids: Sequence[int], timeout: float
) -> None:
    """Ask a job's engines to exit before the scheduler kills them: killed together
    with their nannies, they would only leave the hub after missed heartbeats; shut
    down, they unregister at once. Bounded by ``timeout`` (at most 5 s)."""
    if client is None:
        return
    try:
        targets = [i for i in engine_ids if i in client.ids]
        if targets:
            client.shutdown(targets=targets, block=False)
        deadline = time.monotonic() + min(5.0, timeout)
        while set(targets) & set(client.ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    except Exception as exc:  # the scheduler's cancel still ends the job
        log.debug("pxpool: shutting down engines %s: %r", list(engine_ids), exc)


class EndsOnStop:
    """What a launcher of a scheduler's job has in place of a process: it is never
    signalled, only ended by its ``stop()`` (a cancel, a delete), and joined by
    waiting for that stop to be noticed."""

    state: str
    cancel_timeout: float

    async def join(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else self.cancel_timeout)
        while self.state != "after" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    def signal(self, sig: Any) -> None:
        """Jobs are only cancelled or deleted (see stop())."""


class BatchJob(EndsOnStop, BaseLauncher):  # type: ignore[misc]  # untyped base
    """One submitted job running a set of engines; stop() cancels it and waits for it
    to leave the queue."""

    engine_set_id = Unicode()
    provider_name = Unicode().tag(to_dict=True)
    profile_name = Unicode().tag(to_dict=True)
    job_id = Unicode().tag(to_dict=True)
    output_file = Unicode().tag(to_dict=True)
    engine_ids: List[int] = List().tag(to_dict=True)
    submit_argv: List[str] = List()
    submit_stdin = Unicode(None, allow_none=True)
    submit_timeout = Float(30.0)
    cancel_timeout = Float(15.0)
    status = AnyTrait(None)  # the last JobStatus seen

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._watcher: asyncio.Future[None] | None = None
        self._output: str | None = None
        self._cancelled = False
        self.engine_client: ipp.Client | None = None  # set by the provider that submitted

    @property
    def system(self) -> BatchSystem:
        """The batch system of this job's provider (as the cluster file names it)."""
        system = batch_system(self.provider_name)
        if system is None:
            raise ProfileError(
                f"Job {self.job_id or '(not submitted)'} names provider "
                f"{self.provider_name!r}, which submits no batch jobs."
            )
        return system

    def find_args(self) -> list[str]:
        return list(self.submit_argv) or [self.provider_name]

    async def start(self, n: int | None = None) -> None:
        argv = list(self.submit_argv)
        code, out, err = await run_command(argv, self.submit_timeout, self.submit_stdin)
        if code != 0:
            problem = "" if code is not None else f"gave no answer within {self.submit_timeout:g}s"
            raise SubmitRejected(argv, code, out, err, self.profile_name, problem)
        match = re.search(self.system.job_id_pattern, out)
        if match is None:
            raise SubmitRejected(argv, code, out, err, self.profile_name, "printed no job id")
        self.job_id = match[1]
        self.notify_start({"job_id": self.job_id})
        self._watcher = asyncio.ensure_future(self._watch())

    async def poll(self) -> JobStatus:
        """Ask the scheduler once; a failed or silent status command counts as unknown."""
        code, out, err = await run_command(self.system.status_argv(self.job_id), STATUS_TIMEOUT)
        status = (
            JobStatus("no answer", UNKNOWN)
            if code is None
            else self.system.parse_status(self.job_id, code, out, err)
        )
        if status.kind != UNKNOWN:
            self.status = status
        return status

    async def _watch(self) -> None:
        delay = POLL_FIRST
        while self.state == "running":
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX)
            status = await self.poll()
            if status.kind in (FINISHED, GONE) and self.state == "running":
                self.notify_stop({"job_id": self.job_id, "state": status.describe()})
                return

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self._shut_engines_down()
        if self.job_id and not self._cancelled and not self._ended():
            self._cancelled = True
            await run_command(self.system.cancel_argv(self.job_id), self.submit_timeout)
            deadline = time.monotonic() + self.cancel_timeout
            while time.monotonic() < deadline:
                if (await self.poll()).kind in (FINISHED, GONE):
                    break
                await asyncio.sleep(0.2)
        self.notify_stop({"job_id": self.job_id, "state": self._final_state()})

    async def _shut_engines_down(self) -> None:
        if not self._ended():
            await shut_engines_down(self.engine_client, self.engine_ids, self.cancel_timeout)

    def _ended(self) -> bool:
        return self.status is not None and self.status.kind in (FINISHED, GONE)

    def _final_state(self) -> str:
        if self.status is None:
            return "unknown"
        if self.status.kind == GONE:
            return "left the queue (the scheduler no longer knows it)"
        return str(self.status.describe())

    def get_output(self, remove: bool = False) -> str:
        if self._output is None:
            try:
                with open(self.output_file, errors="replace") as handle:
                    text = handle.read()
            except OSError:
                return ""
            if not remove:
                return text
            self._output = text
            try:
                os.remove(self.output_file)
            except OSError:
                pass
        return self._output

    def _log_output(self, stop_data: Any = None) -> None:
        """Kept for the error report instead of logged (pxpool quotes it when it matters)."""
        self.get_output(remove=True)

    # -------------------------------------------------- reports for the startup wait

    def exit_error(self, missing: list[int]) -> JobFailedError:
        return JobFailedError(
            self.job_id or "(not submitted)",
            self._final_state(),
            self.get_output(),
            system=self.system.system,
            engine_ids=self.engine_ids,
            output_file=self.output_file,
            profile=self.profile_name,
        )

    @classmethod
    def missing_error(
        cls, launchers: list[Any], registered: list[int], wanted: list[int], timeout: float
    ) -> EnginesMissingError:
        jobs = [job for job in launchers if isinstance(job, BatchJob) and job.job_id]
        first = jobs[0] if jobs else None
        return EnginesMissingError(
            registered,
            wanted,
            timeout,
            {
                job.job_id: (job.status.state, job.status.reason) if job.status else ("unknown", "")
                for job in jobs
            },
            [job.job_id for job in jobs if job.status is not None and job.status.kind == PENDING],
            system=first.system.system if first else "batch",
            profile=first.profile_name if first else "?",
        )
