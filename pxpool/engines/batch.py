"""Engines in batch jobs: the part every batch system shares.

One job per engine set (``engines_per_job`` engines each), so restarting or removing
an engine resubmits or cancels exactly the job that holds it. A job is an
ipyparallel launcher (:class:`BatchJob`) kept in ``cluster.engines``: the cluster
file records its job id, so ``pxpool stop`` from another process cancels it too.
While the pool waits for registrations, each job is polled; a job that ends early
or is still queued at the deadline is reported with the scheduler's own words.
A system's module (slurm.py, sge.py, ...) only says which commands, directives and
state names it uses.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import sys
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import ipyparallel as ipp
from ipyparallel.cluster.launcher import BaseLauncher
from traitlets import Any as AnyTrait
from traitlets import Float, List, Unicode

from .._core import runtime as _runtime
from ..errors import ProfileError
from ..profile import Profile
from .base import ENGINE_MODULE, Provider
from .batch_errors import EnginesMissingError, JobFailedError, SubmitCommandNotFound, SubmitRejected
from .launchers import forward_signals, launcher_named

__all__ = ["BatchProvider", "BatchJob", "JobSpec", "JobStatus", "run_command"]

POLL_FIRST = 0.5  # seconds between status polls, growing to POLL_MAX
POLL_MAX = 5.0
STATUS_TIMEOUT = 15.0
PENDING, RUNNING, FINISHED, GONE, UNKNOWN = "pending", "running", "finished", "gone", "unknown"


@dataclass(frozen=True)
class JobStatus:
    """One look at a job: the scheduler's state word, its reason, and what it means."""

    state: str
    kind: str  # pending | running | finished | gone | unknown
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


class BatchJob(BaseLauncher):
    """One submitted job running a set of engines; stop() cancels it and waits for it
    to leave the queue."""

    engine_set_id = Unicode()
    provider_name = Unicode().tag(to_dict=True)
    profile_name = Unicode().tag(to_dict=True)
    job_id = Unicode().tag(to_dict=True)
    output_file = Unicode().tag(to_dict=True)
    engine_ids = List().tag(to_dict=True)
    submit_argv = List()
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
    def system(self) -> type[BatchProvider]:
        from . import PROVIDER_CLASSES

        cls = PROVIDER_CLASSES[self.provider_name]
        assert issubclass(cls, BatchProvider)
        return cls

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
        """Ask the job's engines to exit before the scheduler kills them: killed
        together with their nannies, they would only leave the hub after missed
        heartbeats; shut down, they unregister at once."""
        client = self.engine_client
        if client is None or self._ended():
            return
        try:
            targets = [i for i in self.engine_ids if i in client.ids]
            if targets:
                client.shutdown(targets=targets, block=False)
            deadline = time.monotonic() + min(5.0, self.cancel_timeout)
            while set(targets) & set(client.ids) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        except Exception as exc:  # the scheduler's cancel still ends the job
            self.log.debug("pxpool: shutting down engines of job %s: %r", self.job_id, exc)

    def _ended(self) -> bool:
        return self.status is not None and self.status.kind in (FINISHED, GONE)

    def _final_state(self) -> str:
        if self.status is None:
            return "unknown"
        if self.status.kind == GONE:
            return "left the queue (the scheduler no longer knows it)"
        return str(self.status.describe())

    async def join(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else self.cancel_timeout)
        while self.state != "after" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    def signal(self, sig: Any) -> None:
        """Batch jobs are only cancelled (see stop())."""

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


class BatchProvider(Provider):
    """Submits one job per ``engines_per_job`` engines; subclasses name the commands."""

    system: ClassVar[str]  # the batch system's name in messages
    submit_command: ClassVar[str]
    cancel_command: ClassVar[str]
    directive_prefix: ClassVar[str]
    job_id_pattern: ClassVar[str]  # group 1 is the job id in the submit command's stdout
    launchers: ClassVar[tuple[str, ...]] = ("plain", "mpiexec")
    output_in_script: ClassVar[bool] = False  # redirect output in the script, not a directive
    controller_in_job: ClassVar[bool] = False  # see batch_controller.ControllerJobProvider
    engine_launcher_class = BatchJob

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        if profile.controller.location == "job" and not self.controller_in_job:
            raise ProfileError(
                f"Profile {profile.name!r}: controller.location = 'job' is not supported by the "
                f"{self.name} provider; set controller.location = "
                "'local' (the controller runs where pxpool runs and the jobs connect to it)."
            )
        if profile.batch.launcher not in self.launchers:
            raise ProfileError(
                f"Profile {profile.name!r}: {self.name}.launcher = {profile.batch.launcher!r} "
                f"does not work in {self.system} jobs; use one of: {', '.join(self.launchers)}."
            )
        self.launcher = launcher_named(profile.batch.launcher)
        self._jobs: dict[str, BatchJob] = {}
        self._client: ipp.Client | None = None  # asks engines to exit before a cancel

    def default_engine_count(self) -> int:
        return self.profile.engines or 1

    # -------------------------------------------------- what a system module provides

    @abstractmethod
    def directives(self, spec: JobSpec) -> list[str]:
        """The scheduler options for one job (without the directive prefix)."""

    def write_job_files(
        self, spec: JobSpec, commands: Sequence[str] | None = None
    ) -> tuple[list[str], str | None]:
        """Write what gets submitted (``commands`` instead of the engines: see
        :meth:`render`); return the submit argv and its stdin."""
        self._write(spec.script_file, self.render(spec, commands), executable=True)
        return [self.submit_command, spec.script_file], None

    @classmethod
    @abstractmethod
    def status_argv(cls, job_id: str) -> list[str]: ...

    @classmethod
    @abstractmethod
    def parse_status(cls, job_id: str, code: int, stdout: str, stderr: str) -> JobStatus: ...

    @classmethod
    def cancel_argv(cls, job_id: str) -> list[str]:
        return [cls.cancel_command, job_id]

    # -------------------------------------------------- the job script

    def job_spec(self, pool_dir: str, cluster_id: str, engine_ids: Sequence[int]) -> JobSpec:
        stem = os.path.join(pool_dir, "jobs", f"job-{engine_ids[0]}")
        return JobSpec(
            name=f"pxpool-{cluster_id}-{engine_ids[0]}",
            engine_ids=tuple(engine_ids),
            pool_dir=pool_dir,
            cluster_id=cluster_id,
            script_file=f"{stem}.sh",
            output_file=f"{stem}.out",
        )

    def environment(self) -> dict[str, str]:
        """The profile's variables; with the same interpreter as pxpool, also its
        ``sys.path`` (as local engines get it), so the caller's modules unpickle."""
        env = dict(self.profile.engine.env)
        if os.path.realpath(self.python()) == os.path.realpath(sys.executable):
            inherited = [p for p in sys.path if p and os.path.isdir(p)]
            given = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [given, *inherited]))
        return env

    def render(self, spec: JobSpec, commands: Sequence[str] | None = None) -> str:
        """The job script: directives, environment, prologue, then the engines (or
        ``commands``: the controller's job runs its own)."""
        batch = self.profile.batch
        prefix = self.directive_prefix
        lines = ["#!/bin/bash"]
        drain = self.drain_directives(batch.walltime_signal) if self.drains(commands) else []
        if prefix:  # HTCondor keeps its settings in the submit description instead
            found = [*self.directives(spec), *drain, *batch.directives]
            lines += [f"{prefix} {d}" for d in found]
        what = f"engines {list(spec.engine_ids)}" if commands is None else "the controller"
        lines.append(
            f"# pxpool: {what} of pool {spec.cluster_id} "
            f"(profile {self.profile.name}, launcher {batch.launcher})"
        )
        if self.output_in_script:
            lines.append(f"exec >>{shlex.quote(spec.output_file)} 2>&1")
        lines.append("trap 'echo \"pxpool: job script exited with status $?\"' EXIT")
        env = {"IPP_PROFILE_DIR": spec.pool_dir, "IPP_CLUSTER_ID": spec.cluster_id}
        env.update(self.environment())
        lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
        lines += list(self.profile.engine.prologue)
        if commands is not None:
            lines += commands
            return "\n".join(lines) + "\n"
        command = [self.python(), "-m", ENGINE_MODULE, *self.engine_args(None)]
        engines = self.launcher.lines(command, spec.engine_ids, batch.cores_per_engine)
        lines += forward_signals(engines, batch.launcher) if self.drains(commands) else engines
        return "\n".join(lines) + "\n"

    def drains(self, commands: Sequence[str] | None) -> bool:
        """True for an engine job (not the controller's) of a profile with walltime_signal."""
        return commands is None and self.profile.batch.walltime_signal > 0

    def drain_directives(self, lead: int) -> list[str]:
        """Directives that make the scheduler signal the job ``lead`` seconds before its
        walltime (see :mod:`pxpool._reliability.walltime`); none where the system has no such option
        (PBS sends SIGTERM at the walltime, which engines drain on too)."""
        return []

    def job_script(self, pool_name: str | None = None) -> str:
        """The script for the first job of a pool named ``pool_name``, as it would be
        submitted (paths name the pool's runtime directory)."""
        return self.show_job(self.first_job_spec(pool_name))

    def show_job(self, spec: JobSpec, commands: Sequence[str] | None = None) -> str:
        """What gets submitted for ``spec``, as ``pxpool script`` prints it."""
        return self.render(spec, commands)

    def first_job_spec(self, pool_name: str | None = None) -> JobSpec:
        name = pool_name or f"{self.profile.name}-NAME"
        ids = list(range(min(self.profile.batch.engines_per_job, self.default_engine_count())))
        return self.job_spec(str(_runtime.pool_dir(name)), name, ids or [0])

    @staticmethod
    def _write(path: str, text: str, executable: bool = False) -> None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700 if executable else 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)

    # -------------------------------------------------- the provider interface

    async def start_engines(
        self, cluster: ipp.Cluster, engine_ids: list[int]
    ) -> dict[str, list[int]]:
        if shutil.which(self.submit_command) is None:
            raise SubmitCommandNotFound(
                self.submit_command, self.profile.name, self.system, os.environ.get("PATH", "")
            )
        started: dict[str, list[int]] = {}
        per_job = self.profile.batch.engines_per_job
        for first in range(0, len(engine_ids), per_job):
            ids = engine_ids[first : first + per_job]
            spec = self.job_spec(cluster.profile_dir, cluster.cluster_id, ids)
            argv, stdin = self.write_job_files(spec)
            set_id = f"job-{ids[0]}"
            try:
                await cluster.start_engines(
                    len(ids),
                    engine_set_id=set_id,
                    provider_name=self.name,
                    profile_name=self.profile.name,
                    engine_ids=ids,
                    output_file=spec.output_file,
                    submit_argv=argv,
                    submit_stdin=stdin,
                    submit_timeout=self.profile.timeouts.submit,
                    cancel_timeout=self.profile.timeouts.stop,
                )
            except BaseException:
                cluster.engines.pop(set_id, None)
                raise
            job = self._jobs[set_id] = cluster.engines[set_id]
            if self._client is None:
                self._client = await cluster.connect_client()
            job.engine_client = self._client
            started[set_id] = ids
        return started

    async def release(self, cluster: ipp.Cluster | None) -> None:
        """Cancel every job this provider (or the cluster file) still knows."""
        jobs = {id(job): job for job in self._jobs.values()}
        if cluster is not None:
            jobs.update({id(j): j for j in cluster.engines.values() if isinstance(j, BatchJob)})
        pending = [job.stop() for job in jobs.values() if job.job_id and job.state != "after"]
        self._jobs.clear()
        try:
            if pending:
                await asyncio.wait_for(asyncio.gather(*pending), self.profile.timeouts.stop + 5)
        finally:
            if self._client is not None:
                self._client.close(linger=0)
                self._client = None

    def job_id_of(self, engine_id: int) -> str | None:
        for job in self._jobs.values():
            if engine_id in job.engine_ids and job.state == "running":
                return str(job.job_id)
        return None

    # -------------------------------------------------- helpers for system modules

    @staticmethod
    def walltime_text(seconds: int) -> str:
        hours, rest = divmod(seconds, 3600)
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"

    def memory_mb(self) -> int | None:
        size = self.profile.batch.memory_bytes
        return None if size is None else max(1, size // 2**20)
