"""The provider interface: what a pool asks of the system its engines run on.

A provider starts engines with requested ids as ipyparallel engine sets, so the pool
can map every engine id to the set that owns it (for restart, scale and stop) and a
pool attached from another process can rebuild the same map from the cluster file.
"""

from __future__ import annotations

import shutil
import sys
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from .._core.cluster import PxCluster
from .._core.hold import STARTUP_ARG
from ..errors import ProfileError
from ..profile import Profile

# `python -m` this on every host: ipyparallel's engine with pxpool's light nanny
ENGINE_MODULE = "pxpool._entry.engine_main"


class Provider(ABC):
    """Starts and stops engines for one profile; subclasses differ in where."""

    name: ClassVar[str]
    # Set per class, read per provider: plain (not ClassVar) so that a Provider is the
    # core's EngineProvider protocol, whose members are instance attributes.
    engine_launcher_class: Any
    # True when engines can start with the controller and wait for its connection file
    # (they share this machine's filesystem): a pool then starts ~1 s sooner
    starts_before_controller: bool = False
    # set once the pool's engine hooks ran: engines started later wait for them (_hold)
    hold_engines: bool = False
    # the client scheduler-run engine sets shut their engines down with (start_job_set)
    job_client: Any = None

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    @abstractmethod
    def default_engine_count(self) -> int:
        """How many engines a pool of this profile starts when not told."""

    @abstractmethod
    async def start_engines(
        self, cluster: PxCluster, engine_ids: list[int]
    ) -> dict[str, list[int]]:
        """Start engines that request ``engine_ids``; return ``{engine_set_id: ids}``."""

    def startable_here(self) -> bool:
        """Whether this machine can start pools of this provider as it is (JupyterLab's
        sidebar offers only those): its batch system's submit command on PATH, if any."""
        submit = getattr(self, "submit_command", None)
        return submit is None or shutil.which(submit) is not None

    async def release(self, cluster: PxCluster | None) -> None:
        """Release what this provider started outside ipyparallel's view: batch jobs
        still queued, engines on remote hosts. The pool calls it on every stop, also
        after a partial start, after the cluster's own stop; it must be idempotent and
        bounded by the profile's stop timeout. Local engines need nothing extra."""
        return None

    async def start_job_set(
        self, cluster: PxCluster, set_id: str, ids: list[int], **traits: Any
    ) -> Any:
        """Start one engine set run by a scheduler (a batch job, a Kubernetes Job) and
        return its launcher. The cluster forgets a set that failed to start; a started
        one gets the provider's client (``self.job_client``, connected once), through
        which it asks its engines to exit before the scheduler ends them."""
        try:
            await cluster.start_engines(len(ids), engine_set_id=set_id, engine_ids=ids, **traits)
        except BaseException:
            cluster.engines.pop(set_id, None)
            raise
        launcher = cluster.engines[set_id]
        if self.job_client is None:
            self.job_client = await cluster.connect_client()
        launcher.engine_client = self.job_client
        return launcher

    def close_job_client(self) -> None:
        if self.job_client is not None:
            self.job_client.close(linger=0)
            self.job_client = None

    def job_id_of(self, engine_id: int) -> str | None:
        """The batch job that runs ``engine_id`` (for the health table), if any."""
        return None

    def job_script(self, pool_name: str | None = None) -> str:
        """The script submitted for one job (of pool ``pool_name``); only batch providers
        submit scripts."""
        raise ProfileError(
            f"Profile {self.profile.name!r} uses provider {self.profile.provider!r}, which starts "
            "engines directly and submits no job script; job scripts exist for batch providers "
            "(slurm, sge, pbs, lsf, htcondor)."
        )

    def controller_launcher_class(self) -> Any:
        """The ipyparallel launcher class for the pool's controller, or None for
        ipyparallel's default (a local process, ``controller.location = "local"``)."""
        return None

    def controller_job_script(self, pool_name: str | None = None) -> str:
        """The script submitted for the controller's own job (``controller.location =
        "job"``, batch providers that support it)."""
        raise ProfileError(
            f"Profile {self.profile.name!r} runs the controller where pxpool runs, so there is "
            "no controller job script; set controller.location = 'job' to run it in a batch job."
        )

    def python(self) -> str:
        return self.profile.engine.python or sys.executable

    def engine_args(self, engine_id: int | None) -> list[str]:
        """ipengine arguments shared by all providers: the requested id, work dir, extras."""
        args = [] if engine_id is None else [f"--IPEngine.id={engine_id}"]
        if self.profile.engine.work_dir:
            args.append(f"--work-dir={self.profile.engine.work_dir}")
        if self.hold_engines:
            args.append(STARTUP_ARG)
        return args + list(self.profile.engine.args)
