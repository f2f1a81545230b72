"""Engines in batch jobs: the provider every batch system shares.

One job per engine set (``engines_per_job`` engines each), so restarting or removing
an engine resubmits or cancels exactly the job that holds it. Each job is a
:class:`~.jobs.BatchJob`, watched while the pool waits for its engines (see
:mod:`.jobs`). A system's module (slurm.py, sge.py, ...) only says which commands,
directives and state names it uses.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from .._core import runtime as _runtime
from .._core.cluster import PxCluster
from ..errors import ProfileError
from ..profile import Profile
from .base import ENGINE_MODULE, Provider
from .errors import SubmitCommandNotFound
from .forking import PRELOAD_VARIABLE, stand_in_command
from .jobs import BatchJob, JobSpec, JobStatus, register_batch_system
from .launchers import forward_signals, launcher_named

# BatchJob lives in .jobs; it stays importable from here because cluster files on
# disk name the engine launchers of batch pools "pxpool.engines.batch.BatchJob".
__all__ = ["BatchProvider", "BatchJob"]


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A system's provider (one with a name) is the batch system of its jobs."""
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            register_batch_system(cls.name, cls)

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
        if self.profile.engine.preload:  # engines that are not forked import them first
            env[PRELOAD_VARIABLE] = ",".join(self.profile.engine.preload)
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
        command = [*self.engine_command(spec), *self.engine_args(None)]
        engines = self.launcher.lines(command, spec.engine_ids, batch.cores_per_engine)
        lines += forward_signals(engines, batch.launcher) if self.drains(commands) else engines
        return "\n".join(lines) + "\n"

    def engine_command(self, spec: JobSpec) -> list[str]:
        """How the job starts each engine: forked from one fork server on the job's node
        (``plain``: all engines run where the script runs), else ``python -m`` the engine
        (``srun``/``mpiexec`` tasks and MPI ranks are processes the launcher makes). A job
        of one engine execs it: a server would import the same once, and then fork."""
        engine = self.profile.engine
        several = len(spec.engine_ids) > 1
        if engine.fork_server and several and self.profile.batch.launcher == "plain":
            key = f"{spec.cluster_id}-{spec.engine_ids[0]}"  # one server per job
            return stand_in_command(self.python(), key, engine.preload)
        return [self.python(), "-m", ENGINE_MODULE]

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
        self, cluster: PxCluster, engine_ids: list[int]
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
            self._jobs[set_id] = await self.start_job_set(
                cluster,
                set_id,
                ids,
                provider_name=self.name,
                profile_name=self.profile.name,
                output_file=spec.output_file,
                submit_argv=argv,
                submit_stdin=stdin,
                submit_timeout=self.profile.timeouts.submit,
                cancel_timeout=self.profile.timeouts.stop,
            )
            started[set_id] = ids
        return started

    async def release(self, cluster: PxCluster | None) -> None:
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
            self.close_job_client()

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
