"""Engines as processes on this machine, one ipyparallel engine set per engine so
each can be restarted or stopped alone."""

from __future__ import annotations

import os

import ipyparallel as ipp
from ipyparallel.cluster.launcher import LocalEngineSetLauncher

from ..errors import EngineStartError
from .base import Provider


class LocalProvider(Provider):
    name = "local"
    engine_launcher_class = LocalEngineSetLauncher

    def default_engine_count(self) -> int:
        return self.profile.engines or os.cpu_count() or 1

    async def start_engines(
        self, cluster: ipp.Cluster, engine_ids: list[int]
    ) -> dict[str, list[int]]:
        started: dict[str, list[int]] = {}
        command = [self.python(), "-m", "ipyparallel.engine"]
        for engine_id in engine_ids:
            set_id = f"engine-{engine_id}"
            try:
                await cluster.start_engines(
                    1,
                    engine_set_id=set_id,
                    engine_cmd=command,
                    engine_args=self.engine_args(engine_id),
                    environment=dict(self.profile.engine.env),
                )
            except OSError as exc:
                cluster.engines.pop(set_id, None)
                raise EngineStartError(
                    f"Could not run the engine command {command[0]!r}: {exc.strerror}. "
                    f"Check `python` in profile {self.profile.name!r} ({self.profile.source})."
                ) from exc
            started[set_id] = [engine_id]
        return started
