"""What the core asks of a provider (``pxpool.engines``), as a protocol.

The core drives providers but sits below them: providers use the core's runtime
directory, startup waits and engine hold. So the core names only this protocol;
:class:`pxpool.engines.base.Provider` implements it, and ``Pool`` hands the core
the provider its profile names.
"""

from __future__ import annotations

from typing import Any, Protocol

from .cluster import PxCluster


class EngineProvider(Protocol):
    """Starts and stops engines for one profile (see :mod:`pxpool.engines.base`)."""

    starts_before_controller: bool
    engine_launcher_class: Any
    hold_engines: bool

    def default_engine_count(self) -> int: ...

    async def start_engines(
        self, cluster: PxCluster, engine_ids: list[int]
    ) -> dict[str, list[int]]: ...

    async def release(self, cluster: PxCluster | None) -> None: ...

    def job_id_of(self, engine_id: int) -> str | None: ...

    def job_script(self, pool_name: str | None = None) -> str: ...

    def controller_launcher_class(self) -> Any: ...
