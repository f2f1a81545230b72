"""Engines as processes on this machine, one ipyparallel engine set per engine so
each can be restarted or stopped alone."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from ipyparallel.cluster.launcher import LocalEngineLauncher, LocalEngineSetLauncher

from .._core.cluster import PxCluster
from .._core.startup import engine_file
from ..errors import EngineStartError
from ..profile import Profile
from .base import ENGINE_MODULE, Provider
from .cgroups import confine_engine_set, release_pool
from .forked import ForkFromServer
from .forking import FORK_SERVER_VARIABLE, PRELOAD_VARIABLE, ForkServers

JOIN_POLL = 0.02  # seconds between looks at a stopping process


class NonBlockingJoin:
    """ipyparallel 9's ``LocalProcessLauncher.join`` waits with ``Thread.join`` inside
    an ``async def``, which blocks the event loop: ``Cluster.stop_engines`` then sends
    SIGTERM to an engine only once the one before has exited (32 engines took ~16 s
    to stop, one at a time, and ran into the stop timeout). Here the wait polls, so
    every engine is signalled at once and they exit together."""

    _wait_thread: Any
    process: Any

    async def join(self, timeout: float | None = None) -> None:
        thread = self._wait_thread
        if thread is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Process {self.process.pid} did not exit in {timeout} seconds.")
            await asyncio.sleep(JOIN_POLL)


class LocalEngine(NonBlockingJoin, ForkFromServer, LocalEngineLauncher):  # type: ignore[misc]
    """One local engine process (see :class:`NonBlockingJoin`), forked from the pool's
    fork server when there is one (:class:`ForkFromServer`)."""


class LocalEngines(LocalEngineSetLauncher):  # type: ignore[misc]  # untyped base
    """ipyparallel's local engine set, made of :class:`LocalEngine` launchers."""

    launcher_class = LocalEngine


class LocalProvider(Provider):
    name = "local"
    engine_launcher_class = LocalEngines
    starts_before_controller = True

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.forks = ForkServers(profile, self.python(), ENGINE_MODULE)

    def environment(self) -> dict[str, str]:
        """The profile's variables, plus this process's ``sys.path`` when the engines run
        the same interpreter: functions from the caller's modules then unpickle on the
        engines, as they do in ``multiprocessing``'s spawned workers."""
        env = dict(self.profile.engine.env)
        if os.path.realpath(self.python()) == os.path.realpath(sys.executable):
            inherited = [p for p in sys.path if p and os.path.isdir(p)]
            given = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [given, *inherited]))
        if self.profile.engine.preload:  # exec'd engines import them first
            env[PRELOAD_VARIABLE] = ",".join(self.profile.engine.preload)
        return env

    def default_engine_count(self) -> int:
        return self.profile.engines or os.cpu_count() or 1

    async def start_engines(
        self, cluster: PxCluster, engine_ids: list[int]
    ) -> dict[str, list[int]]:
        started: dict[str, list[int]] = {}
        command = [self.python(), "-m", ENGINE_MODULE]
        # engines may start before the controller listens: they wait for its address
        connection = [
            f"--IPEngine.url_file={engine_file(cluster)}",
            f"--IPEngine.wait_for_url_file={self.profile.timeouts.start:g}",
        ]
        environment = self.environment()
        server = await self.forks.ensure(cluster, environment, self.python())
        if server is not None:
            environment[FORK_SERVER_VARIABLE] = server
        for engine_id in engine_ids:
            set_id = f"engine-{engine_id}"
            try:
                await cluster.start_engines(
                    1,
                    engine_set_id=set_id,
                    engine_cmd=command,
                    engine_args=connection + self.engine_args(engine_id),
                    environment=environment,
                )
            except OSError as exc:
                cluster.engines.pop(set_id, None)
                raise EngineStartError(
                    f"Could not run the engine command {command[0]!r}: {exc.strerror}. "
                    f"Check `python` in profile {self.profile.name!r} ({self.profile.source})."
                ) from exc
            started[set_id] = [engine_id]
            confine_engine_set(cluster, set_id, self.profile.engine.memory_limit_bytes)
        return started

    async def release(self, cluster: PxCluster | None) -> None:
        """Stop the fork server; remove the engines' memory cgroups (``[engine]
        memory_limit``)."""
        self.forks.stop()
        if cluster is not None:
            release_pool(str(cluster.cluster_id))
