"""PoolCore: what every feature of a pool may use, and the one path engines take.

A pool is one ipyparallel Cluster (controller and engine sets), one Client, the
engine ids each engine set owns, a state, and the hooks that run whenever engines
join. Features (health, debugging, fault handling, fast data) are written against
this class, never against :class:`pxpool.Pool`, which composes them over it.

Engines join and leave through :meth:`PoolCore.add_engines` and
:meth:`PoolCore.remove_engines` only: start the engine sets with the requested
ids, wait for registration, run the engine hooks (with the engines held until
then, :mod:`pxpool._core.hold`), and write the pool's record, which other
processes (``Pool.attach``, ``pxpool status``) read. Every engine operation in
flight is recorded in :attr:`PoolCore.operations`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import ipyparallel as ipp

from ..errors import EngineNotFoundError, EngineStopError, PoolStateError
from ..profile import Profile
from . import hold, runtime
from .client import PxClient
from .cluster import PxCluster
from .events import TaskEvents
from .loop import LoopThread
from .processes import local_process_tree_of, reap
from .provider import EngineProvider
from .startup import StartupWatch
from .state import Operation, OperationKind, Operations, PoolState
from .stop_request import StopRequests

log = logging.getLogger("pxpool.pool")
EngineHook = Callable[["PoolCore", list[int]], None]
REMOVE_POLL = 0.02  # seconds between checks that removed engines left the hub


class PoolCore:
    """State and engine operations of one pool (see the module docstring)."""

    def __init__(
        self, profile: Profile, name: str, provider: EngineProvider, *, detached: bool = False
    ) -> None:
        self.profile = profile
        self.name = name
        self.provider = provider
        self.detached = detached  # True: the pool outlives this process (`pxpool start`)
        self.state = PoolState.NEW
        self.cluster: PxCluster | None = None
        self.client: PxClient | None = None
        self.engine_sets: dict[str, list[int]] = {}  # engine set id -> engine ids
        self.next_id = 0
        self.hooks: list[EngineHook] = []
        self.teardown_hooks: list[Callable[[str], None]] = []  # called with the pool's name
        self.operations = Operations()
        self.joining: set[int] = set()  # ids add_engines is starting now
        self.replacing: set[int] = set()  # ids the supervisor will start again (back-off too)
        self.loop = LoopThread(f"pxpool-{name}")
        self.task_events = TaskEvents()  # finished tasks of every route, for task streams
        self.stop_requests: StopRequests | None = None  # stops it when another process asks
        self.stopped_by: str | None = None  # who asked, when another process stopped it

    # ------------------------------------------------------------ reading state

    def running(self) -> tuple[PxClient, PxCluster]:
        """The client and cluster of a running pool; else a PoolStateError saying why."""
        if self.state is PoolState.IDLE:
            raise PoolStateError(
                f"Pool {self.name!r} released its engines after idle_timeout; "
                "`pool.wake_sync()` (or any use of its engines) starts them again."
            )
        if self.state is PoolState.STOPPED and self.stopped_by:
            raise PoolStateError(
                f"Pool {self.name!r} was stopped: {self.stopped_by} asked for it; "
                "`pool.start_sync()` starts it again."
            )
        if self.state is not PoolState.RUNNING or self.client is None or self.cluster is None:
            raise PoolStateError(
                f"Pool {self.name!r} is {self.state}; call `pool.start_sync()` "
                "(or `await pool.start()`) first."
            )
        return self.client, self.cluster

    def live_client(self) -> PxClient:
        """The client of a running pool (see :meth:`running`)."""
        return self.running()[0]

    def registered_ids(self) -> list[int]:
        """Engine ids the hub has registered now; empty unless running."""
        client = self.client
        return sorted(client.ids) if client is not None and self.state is PoolState.RUNNING else []

    def engines_on_the_way(self) -> bool:
        """True while engines are starting, being replaced, or restarted: work that
        waits for an engine will get one."""
        return bool(self.joining or self.replacing or self.operations.snapshot())

    def controller_ip(self) -> str:
        """The controller's address as engines reach it (agents on engines listen on
        their interface towards it)."""
        interface = str(self.live_client()._config["interface"])  # noqa: SLF001 (no public accessor)
        return interface.split("://", 1)[-1]

    def engine_uuids(self) -> dict[int, str]:
        """Engine id -> the uuid the hub knows it by (ipyparallel keeps no public map)."""
        return dict(self.live_client()._engines)  # noqa: SLF001 (no public accessor)

    def owner_ids(self) -> set[int]:
        """Every engine id one of the pool's engine sets owns."""
        return {i for ids in self.engine_sets.values() for i in ids}

    def sets_of(self, engine_ids: list[int]) -> list[list[int]]:
        """The engine sets that own any of ``engine_ids`` (they stop and start together)."""
        wanted = set(engine_ids)
        return [list(ids) for ids in self.engine_sets.values() if wanted & set(ids)]

    def check_engine(self, engine_id: int) -> None:
        """Raise EngineNotFoundError unless one of the pool's sets owns ``engine_id``."""
        if engine_id not in self.owner_ids():
            raise EngineNotFoundError(engine_id, self.registered_ids())

    def view(self, targets: Any = None) -> ipp.DirectView:
        """A blocking DirectView on ``targets`` (default: all engines, also later
        ones); unknown engine ids raise EngineNotFoundError naming the valid ones."""
        client = self.live_client()
        if targets is not None:
            wanted = [targets] if isinstance(targets, int) else targets
            if isinstance(wanted, list | tuple | range):
                for target in wanted:
                    if target not in client.ids:
                        raise EngineNotFoundError(target, client.ids)
        view = client.direct_view("all" if targets is None else targets)
        view.block = True
        return view

    def take_ids(self, count: int) -> list[int]:
        """``count`` engine ids never used in this pool."""
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        return ids

    # ------------------------------------------------------------ hooks

    def add_engine_hook(self, hook: EngineHook) -> None:
        """Call ``hook(core, engine_ids)`` whenever engines (re)join this pool, and now
        for the engines already running."""
        self.hooks.append(hook)
        if self.state is PoolState.RUNNING:
            hook(self, self.registered_ids())

    async def engines_ready(self, engine_ids: list[int]) -> None:
        """Run every hook on engines that joined, then release them (they start held)."""
        with hold.hooks_running():  # their messages pass engines held until the release
            for hook in list(self.hooks):
                try:
                    await asyncio.to_thread(hook, self, engine_ids)
                except Exception:
                    log.exception("pxpool: engine hook %r failed for engines %s", hook, engine_ids)
            await asyncio.to_thread(hold.release, self, engine_ids)

    # ------------------------------------------------------------ the engine path

    async def launch(self, cluster: PxCluster, engine_ids: list[int]) -> dict[str, list[int]]:
        """Start engine sets asking for ``engine_ids`` (no wait); they join the pool."""
        new_sets = await self.provider.start_engines(cluster, engine_ids)
        self.engine_sets.update(new_sets)
        return new_sets

    async def add_engines(self, engine_ids: list[int]) -> None:
        """Start engines under ``engine_ids``, wait until they registered (within
        ``timeouts.start``), run the engine hooks on them, and write the record."""
        client, cluster = self.running()
        self.joining.update(engine_ids)
        try:
            new_sets = await self.launch(cluster, engine_ids)
            try:
                await StartupWatch(
                    cluster, self.profile, self.profile.timeouts.start
                ).engines_registered(client, engine_ids, new_sets, self.owner_ids())
            finally:
                self.write_record()
            await self.engines_ready(engine_ids)
        finally:
            self.joining.difference_update(engine_ids)
        self.write_record()

    async def add_new_engines(self, count: int) -> list[int]:
        """:meth:`add_engines` under ``count`` new ids; returns them."""
        self.running()
        ids = self.take_ids(count)
        await self.add_engines(ids)
        return ids

    async def remove_engines(self, engine_ids: list[int]) -> None:
        """Stop the engine sets that own any of ``engine_ids``, wait until the hub
        dropped them (within ``timeouts.stop``), and write the record."""
        client, cluster = self.running()
        with self.operations.running(OperationKind.REMOVE, engine_ids):
            try:
                await self._stop_sets(cluster, engine_ids)
            finally:
                self.write_record()
            await self._wait_unregistered(client, set(engine_ids))

    async def _stop_sets(self, cluster: PxCluster, engine_ids: list[int]) -> None:
        timeout = self.profile.timeouts.stop
        doomed = {s for s, ids in self.engine_sets.items() if set(ids) & set(engine_ids)}
        for set_id in doomed:
            launcher = cluster.engines.get(set_id)
            if launcher is not None:
                processes = local_process_tree_of(launcher)
                await asyncio.wait_for(cluster.stop_engines(set_id), timeout)
                await reap(processes, timeout)
            self.engine_sets.pop(set_id)

    async def _wait_unregistered(self, client: PxClient, gone_ids: set[int]) -> None:
        timeout = self.profile.timeouts.stop
        deadline = time.monotonic() + timeout
        while gone_ids & set(client.ids):
            if time.monotonic() > deadline:
                raise EngineStopError(
                    f"Engines {sorted(gone_ids & set(client.ids))} still registered "
                    f"{timeout:g}s after they were stopped; see `pxpool status {self.name}`."
                )
            await asyncio.sleep(REMOVE_POLL)

    async def restart_engine(self, engine_id: int) -> list[int]:
        """Replace ``engine_id`` with a fresh process under the same id; engines that
        share its process group or batch job go down and come back with it."""
        self.running()
        self.check_engine(engine_id)
        together = sorted(i for ids in self.sets_of([engine_id]) for i in ids)
        with self.operations.running(OperationKind.RESTART, together):
            await self.remove_engines(together)
            await self.add_engines(together)
        return together

    def restarts_in_flight(self) -> dict[int, Operation]:
        """Engines a restart is replacing now, each with its operation (one restart is
        told from the next by the operation's identity)."""
        return self.operations.of_kind(OperationKind.RESTART)

    # ------------------------------------------------------------ record

    def write_record(self) -> None:
        """Write ``pool.json``: what another process needs to attach to or stop it."""
        if self.cluster is None or not runtime.pool_dir(self.name).is_dir():
            return  # stopped meanwhile: nothing left to describe
        runtime.write_private_json(
            runtime.pool_dir(self.name) / runtime.RECORD_FILE,
            {
                "name": self.name,
                "profile": self.profile.name,
                "profile_settings": runtime.profile_record(self.profile),  # with overrides
                "provider": self.profile.provider,
                "cluster_file": self.cluster.cluster_file,
                "owner_pid": os.getpid(),
                "detached": self.detached,
                "created": time.time(),
                "engine_sets": self.engine_sets,
                "next_id": self.next_id,
            },
        )
