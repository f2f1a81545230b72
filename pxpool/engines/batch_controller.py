"""The controller in a batch job of its own (``controller.location = "job"``).

On clusters where long-running processes are not welcome on the login node, the
controller runs in a job, like the engines. It is one more :class:`BatchJob` whose
script runs ``python -m pxpool._entry.controller_main`` (ipyparallel's controller with
pxpool's upkeep) with the pool's profile directory,
cluster id and controller arguments. Starting it submits the job and waits (bounded
by ``timeouts.start``) for the connection files the controller writes into the
pool's runtime directory, which therefore must be on a filesystem the job's node
shares with pxpool. The controller listens on ``controller.ip``: on a real cluster
that must be an address the client and the engines reach (``ip = "*"`` listens on
every interface of the job's node). Stopping the pool cancels the controller's job
after the engines' jobs.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from ipyparallel.cluster.launcher import ControllerLauncher

from .._core import runtime as _runtime
from .._core.cluster import PxCluster
from .._core.startup import controller_args
from ..errors import ControllerStartError
from .batch import BatchProvider
from .errors import JobFailedError
from .jobs import PENDING, BatchJob, JobSpec

__all__ = ["ControllerJob", "ControllerJobProvider"]

FILE_POLL = 0.1  # seconds between looks for the connection files


class ControllerJob(BatchJob, ControllerLauncher):  # type: ignore[misc]  # untyped base
    """The controller's job; ``start()`` returns once its connection files exist.

    The provider that renders the script is bound per pool (see
    :meth:`ControllerJobProvider.controller_launcher_class`); a job rebuilt from the
    cluster file has none, and only needs its job id to be cancelled."""

    # How the cluster file names this class (ipyparallel's "module:Class" form for a
    # launcher without an entry point cannot be imported back).
    entrypoint_name = "pxpool.engines.batch_controller.ControllerJob"
    provider: ClassVar[Any] = None  # the BatchProvider whose profile describes the job
    start_timeout: ClassVar[float] = 60.0

    async def start(self, n: int | None = None) -> None:
        provider = self.provider
        if provider is None:
            raise ControllerStartError("A controller job needs the provider of its pool.")
        spec = provider.controller_job_spec(self.profile_dir, self.cluster_id)
        argv, stdin = provider.write_controller_files(spec, list(self.controller_args))
        self.provider_name = provider.name
        self.profile_name = provider.profile.name
        self.output_file = spec.output_file
        self.engine_ids = []
        self.submit_argv = argv
        self.submit_stdin = stdin
        self.submit_timeout = provider.profile.timeouts.submit
        self.cancel_timeout = provider.profile.timeouts.stop
        provider.controller_job = self
        await super().start()
        await self._wait_for_files(self.start_timeout)

    def _files_exist(self) -> bool:
        return all(os.path.exists(path) for path in self.connection_files.values())

    async def _wait_for_files(self, timeout: float) -> None:
        """Until the controller wrote its connection files; a job that ends first is a
        JobFailedError with its output, one still queued at the deadline a
        ControllerStartError with the scheduler's reason."""
        deadline = time.monotonic() + timeout
        while not self._files_exist():
            if self.state == "after":
                raise self.exit_error([])
            if time.monotonic() > deadline:
                raise self._late_error(timeout)
            await asyncio.sleep(FILE_POLL)

    def _late_error(self, timeout: float) -> ControllerStartError:
        status = self.status
        system = self.system.system
        if status is not None and status.kind == PENDING:
            return ControllerStartError(
                f"The {system} job {self.job_id} running the controller of pool "
                f"{self.cluster_id!r} is still {status.state}"
                + (f" (reason: {status.reason})" if status.reason else "")
                + f" after {timeout:g}s. Ask for fewer cores or less memory, another queue, "
                f"or raise timeouts.start in profile {self.profile_name!r}."
            )
        return ControllerStartError(
            f"The {system} job {self.job_id} running the controller of pool {self.cluster_id!r} "
            f"is {status.describe() if status else 'in an unknown state'} but wrote no connection "
            f"files into {os.path.dirname(self.connection_files['client'])} within {timeout:g}s. "
            "The pool's runtime directory must be on a filesystem the job's node shares "
            "(set PXPOOL_RUNTIME_DIR); its output file is " + self.output_file + ".",
            self.get_output(),
        )

    async def get_connection_info(self, timeout: float | None = None) -> dict[str, Any]:
        if self.state == "after" and not self._files_exist():
            raise self.exit_error([])
        await self._wait_for_files(self.connection_info_timeout if timeout is None else timeout)
        info: dict[str, Any] = await super().get_connection_info(timeout=0)
        return info

    def exit_error(self, missing: list[int]) -> JobFailedError:
        return JobFailedError(
            self.job_id or "(not submitted)",
            self._final_state(),
            self.get_output(),
            system=self.system.system,
            engine_ids=[],
            output_file=self.output_file,
            profile=self.profile_name,
            controller=True,
        )


class ControllerJobProvider(BatchProvider):
    """A BatchProvider whose system can also run the pool's controller in a job."""

    controller_in_job = True
    controller_job: ControllerJob | None = None  # set when the job is submitted
    controller_job_class: ClassVar[type[ControllerJob]] = ControllerJob  # a system's own

    def controller_launcher_class(self) -> type[ControllerJob] | None:
        """A ControllerJob class bound to this provider, for ``location = "job"``."""
        if self.profile.controller.location != "job":
            return None
        bound = {"provider": self, "start_timeout": self.profile.timeouts.start}
        bound["__module__"] = __name__
        base = self.controller_job_class
        return type(f"{type(self).__name__}ControllerJob", (base,), bound)

    def controller_job_spec(self, pool_dir: str, cluster_id: str) -> JobSpec:
        stem = os.path.join(pool_dir, "jobs", "controller")
        return JobSpec(
            name=f"pxpool-{cluster_id}-controller",
            engine_ids=(),
            pool_dir=pool_dir,
            cluster_id=cluster_id,
            script_file=f"{stem}.sh",
            output_file=f"{stem}.out",
        )

    def controller_command(self, spec: JobSpec, args: Sequence[str]) -> list[str]:
        """The script's command line: the controller with the pool's directory and id."""
        command = [
            self.python(),
            "-m",
            "pxpool._entry.controller_main",
            f"--profile-dir={spec.pool_dir}",
            f"--cluster-id={spec.cluster_id}",
            *args,
        ]
        return [shlex.join(command)]

    def write_controller_files(
        self, spec: JobSpec, args: Sequence[str]
    ) -> tuple[list[str], str | None]:
        """Write the controller's job script (as the system submits it: a file, stdin,
        a submit description); return the submit argv and its stdin."""
        return self.write_job_files(spec, self.controller_command(spec, args))

    def controller_job_script(self, pool_name: str | None = None) -> str:
        """The controller's job script for a pool named ``pool_name``, with the
        controller arguments the pool passes."""
        if self.profile.controller.location != "job":
            return super().controller_job_script(pool_name)
        name = pool_name or f"{self.profile.name}-NAME"
        args = controller_args(self.profile.controller)
        spec = self.controller_job_spec(str(_runtime.pool_dir(name)), name)
        return self.show_job(spec, self.controller_command(spec, args))

    async def release(self, cluster: PxCluster | None) -> None:
        """Engines first, while the hub still answers, then the controller's job (also
        when stopping an engine job failed). The pool stops the engine sets itself only
        when it sees a local controller process, so with a job it happens here."""
        limit = self.profile.timeouts.stop + 5
        try:
            if cluster is not None and isinstance(cluster.controller, ControllerJob):
                await asyncio.wait_for(cluster.stop_engines(), limit)
            await super().release(cluster)
        finally:
            jobs = [self.controller_job, cluster.controller if cluster is not None else None]
            self.controller_job = None
            for job in {id(j): j for j in jobs if isinstance(j, ControllerJob)}.values():
                if job.job_id and job.state != "after":
                    await asyncio.wait_for(job.stop(), limit)
            if cluster is not None and isinstance(cluster.controller, ControllerJob):
                await cluster.stop_controller()  # forget it, and update the cluster file
