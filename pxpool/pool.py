"""The Pool: one ipyparallel controller, the engines a provider started, and a Client.

Coroutine methods (``start``, ``stop``, ``scale``, ``restart``) have blocking
``_sync`` twins, as in ipyparallel; the context managers and the data methods
(``push``, ``pull``, ``apply``) block. Every wait is bounded by the profile's
timeouts, and a pool that fails to start stops whatever it had started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import ipyparallel as ipp

from ._access import EngineAccess
from ._core import hold, runtime, security
from ._core.cluster import PxCluster
from ._core.loop import LoopThread, SyncTwins
from ._core.processes import local_process_tree, local_process_tree_of, processes_of_pool, reap
from ._core.startup import StartupWatch, controller_args, controller_launcher
from ._data import arena, shm
from ._reliability.idle import IdleAccess, watch_idle
from ._reliability.limits import apply_engine_limits
from ._reliability.supervisor import supervise
from ._reliability.walltime import prepare_drain
from .debug import DebugAccess, install_debugger
from .doctor import DoctorAccess, warn_on_version_mismatch
from .engines import provider_for
from .errors import EngineNotFoundError, PoolNotFoundError, PoolStateError, PxpoolError
from .health import HealthAccess
from .profile import Profile, load_profile

__all__ = ["Pool", "current"]

log = logging.getLogger("pxpool.pool")
EngineHook = Callable[["Pool", list[int]], None]
TERMINATE_GRACE_SECONDS = 3.0
# ipyparallel logs every engine's output at WARNING when it stops; pxpool reports
# failures itself, with that output attached, so keep its own log quiet by default.
logging.getLogger("pxpool.ipyparallel").setLevel(logging.CRITICAL)
_current: Pool | None = None


def current() -> Pool:
    """The pool most recently started (or attached) in this process."""
    if _current is None or _current.state not in ("running", "idle"):
        raise PoolStateError(
            "No running pool in this process; start one with "
            "`pxpool.Pool.from_profile('local').start_sync()` or `%pool start`."
        )
    return _current


class Pool(HealthAccess, DoctorAccess, DebugAccess, IdleAccess, EngineAccess, SyncTwins):
    """A pool of IPython engines described by a :class:`~pxpool.profile.Profile`."""

    def __init__(
        self, profile: Profile, name: str | None = None, *, detached: bool = False
    ) -> None:
        self.profile = profile
        self.name = runtime.check_pool_name(name or f"{profile.name}-{secrets.token_hex(3)}")
        self.detached = detached  # True: the pool outlives this process (`pxpool start`)
        self.provider = provider_for(profile)
        self.state = "new"
        self._cluster: ipp.Cluster | None = None
        self._client: ipp.Client | None = None
        self._engine_sets: dict[str, list[int]] = {}
        self._next_id = 0
        self._engine_hooks: list[EngineHook] = [apply_engine_limits]  # before setup replays
        self.add_engine_hook(install_debugger)  # breakpoint() and pool.debug() on engines
        self.add_engine_hook(prepare_drain)  # SIGUSR1/SIGUSR2/SIGTERM: finish, leave cleanly
        self.add_engine_hook(supervise)  # deaths noticed, engines replaced, setup replayed
        self.add_engine_hook(warn_on_version_mismatch)  # Python/package versions differ
        self.add_engine_hook(watch_idle)  # core-hours; idle_timeout releases the engines
        self._loop_thread = LoopThread(f"pxpool-{self.name}")

    @classmethod
    def from_profile(
        cls, name: str = "local", *, pool_name: str | None = None, **overrides: Any
    ) -> Pool:
        """Load profile ``name`` with ``overrides`` (see :func:`pxpool.load_profile`)."""
        return cls(load_profile(name, **overrides), pool_name)

    def __repr__(self) -> str:
        engines = (
            len(self._client.ids) if self._client is not None and self.state == "running" else 0
        )
        return f"<Pool {self.name!r} profile={self.profile.name!r} state={self.state} engines={engines}>"

    # ---------------------------------------------------------------- lifecycle

    async def start(
        self, wait: bool = True, timeout: float | None = None, engines: int | None = None
    ) -> Pool:
        """Start the controller and engines; with ``wait``, until all engines registered.

        Raises a :class:`~pxpool.errors.PoolStartError` subclass, with the failing
        process's output, when anything exits early or the timeout passes.
        """
        return await self._loop_thread.run(self._start(wait, timeout, engines))

    async def _start(self, wait: bool, timeout: float | None, engines: int | None) -> Pool:
        global _current
        if self.state not in ("new", "stopped", "failed"):
            raise PoolStateError(
                f"Pool {self.name!r} is {self.state}; stop it before starting it again."
            )
        if runtime.controller_alive(self.name):
            raise PoolStateError(
                f"A pool named {self.name!r} is already running; "
                f"stop it with `pxpool stop {self.name}` or choose another name."
            )
        timeout = self.profile.timeouts.start if timeout is None else timeout
        count = self.provider.default_engine_count() if engines is None else engines
        self.state = "starting"
        runtime.remove_pool_dir(self.name)
        directory = runtime.pool_dir(self.name, create=True)
        security.prepare_profile_dir(directory, self.profile.controller)
        self._cluster = cluster = PxCluster(
            cluster_id=self.name,
            profile_dir=str(directory),
            parent=None,
            log=logging.getLogger("pxpool.ipyparallel"),
            load_profile=False,
            shutdown_atexit=not self.detached,
            delay=0,
            n=0,
            controller_args=controller_args(self.profile.controller),
            send_engines_connection_env=not self.provider.starts_before_controller,
            engine_launcher_class=self.provider.engine_launcher_class,
            **controller_launcher(self.provider),
        )
        watch = StartupWatch(cluster, self.profile, timeout)
        early = self.provider.starts_before_controller
        try:
            ids = self._take_ids(count)
            if early:  # engines import while the controller starts, then read its file
                await watch.launch_controller()
                self._engine_sets.update(await self.provider.start_engines(cluster, ids))
            await watch.controller_started()
            self._client = await cluster.connect_client()
            if not early:
                self._engine_sets.update(await self.provider.start_engines(cluster, ids))
            self._write_record()
            if wait:
                await watch.engines_registered(self._client, ids, self._engine_sets)
        except BaseException:
            self.state = "failed"
            await self._teardown()
            raise
        self.state = "running"
        _current = self
        if wait:
            await self._engines_ready(ids)
        return self

    def _take_ids(self, count: int) -> list[int]:
        ids = list(range(self._next_id, self._next_id + count))
        self._next_id += count
        return ids

    async def stop(self) -> None:
        """Stop every engine and the controller; safe to call twice."""
        await self._loop_thread.run(self._stop())

    async def _stop(self) -> None:
        global _current
        if self.state in ("new", "stopped"):
            return
        self.state = "stopping"
        await self._teardown()
        self.state = "stopped"
        if _current is self:
            _current = None

    async def _teardown(self) -> None:
        """Release everything this pool started, also after a partial start or after
        its controller died. Graceful stops get a bounded time; then what is left of
        the pool's processes gets SIGTERM and, after a grace period, SIGKILL."""
        if self._client is not None:
            self._client.close(linger=0)
            self._client = None
        stop_timeout = self.profile.timeouts.stop
        cluster, self._cluster = self._cluster, None
        if cluster is not None and runtime.controller_alive(self.name, jobs=False):
            engine_processes = local_process_tree(cluster, "engines")
            try:
                # engines first: their nannies exit promptly only while the hub answers
                await asyncio.wait_for(cluster.stop_engines(), stop_timeout)
                await reap(engine_processes, stop_timeout)
                await asyncio.wait_for(cluster.stop_controller(), stop_timeout)
            except Exception as exc:  # keep cleaning up; the sweep below ends the rest
                log.warning("pxpool: stopping pool %r did not finish cleanly: %r", self.name, exc)
        try:
            await self.provider.release(cluster)
        except Exception as exc:
            log.warning(
                "pxpool: releasing pool %r's %s resources failed: %r",
                self.name,
                self.profile.provider,
                exc,
            )
        leftovers = processes_of_pool(str(runtime.pool_dir(self.name)))
        if cluster is not None:
            leftovers += local_process_tree(cluster)
        await reap(leftovers, TERMINATE_GRACE_SECONDS, terminate=True)
        self._engine_sets.clear()
        runtime.remove_pool_dir(self.name)
        arena.close(shm.pool_prefix(self.name))  # the slots pushes reuse
        shm.cleanup(shm.pool_prefix(self.name))  # segments a crashed transfer left

    async def scale(self, n: int) -> list[int]:
        """Grow or shrink the pool to ``n`` engines; returns the engine ids afterwards."""
        return await self._loop_thread.run(self._scale(n))

    async def _scale(self, n: int) -> list[int]:
        if n < 0:
            raise ValueError(f"scale(n) needs n >= 0; got {n}")
        client, cluster = self._running()
        have = sorted(client.ids)
        if n > len(have):
            ids = self._take_ids(n - len(have))
            new_sets = await self.provider.start_engines(cluster, ids)
            self._engine_sets.update(new_sets)
            await StartupWatch(
                cluster, self.profile, self.profile.timeouts.start
            ).engines_registered(client, ids, new_sets, self._owner_ids())
            await self._engines_ready(ids)
        elif n < len(have):
            await self._remove_engines(have[n:])
        self._write_record()
        return sorted(client.ids)

    async def restart(self, engine_id: int) -> int:
        """Replace engine ``engine_id`` with a fresh process under the same id."""
        return await self._loop_thread.run(self._restart(engine_id))

    async def _restart(self, engine_id: int) -> int:
        client, cluster = self._running()
        if engine_id not in self._owner_ids():
            raise EngineNotFoundError(engine_id, client.ids)
        # engines that share a process group or batch job go down and come back together
        together = sorted(i for ids in self._engine_sets.values() if engine_id in ids for i in ids)
        await self._remove_engines(together)
        new_sets = await self.provider.start_engines(cluster, together)
        self._engine_sets.update(new_sets)
        await StartupWatch(cluster, self.profile, self.profile.timeouts.start).engines_registered(
            client, together, new_sets, self._owner_ids()
        )
        await self._engines_ready(together)
        self._write_record()
        return engine_id

    def add_engine_hook(self, hook: EngineHook) -> None:
        """Call ``hook(pool, engine_ids)`` whenever engines (re)join this pool: after
        start, scale and restart, and for engines already running when it is added.
        Health agents and setup replays use it."""
        self._engine_hooks.append(hook)
        if self.state == "running":
            hook(self, self.ids)

    async def _engines_ready(self, engine_ids: list[int]) -> None:
        with hold.hooks_running():  # their messages pass engines held until the release
            for hook in list(self._engine_hooks):
                try:
                    await asyncio.to_thread(hook, self, engine_ids)
                except Exception:
                    log.exception("pxpool: engine hook %r failed for engines %s", hook, engine_ids)
            await asyncio.to_thread(hold.release, self, engine_ids)

    def _owner_ids(self) -> set[int]:
        return {i for ids in self._engine_sets.values() for i in ids}

    async def _remove_engines(self, engine_ids: list[int]) -> None:
        client, cluster = self._running()
        doomed = {s for s, ids in self._engine_sets.items() if set(ids) & set(engine_ids)}
        for set_id in doomed:
            launcher = cluster.engines.get(set_id)
            if launcher is not None:
                processes = local_process_tree_of(launcher)
                await asyncio.wait_for(cluster.stop_engines(set_id), self.profile.timeouts.stop)
                await reap(processes, self.profile.timeouts.stop)
            self._engine_sets.pop(set_id)
        gone_ids = set(engine_ids)
        deadline = time.monotonic() + self.profile.timeouts.stop
        while gone_ids & set(client.ids):
            if time.monotonic() > deadline:
                raise PxpoolError(
                    f"Engines {sorted(gone_ids & set(client.ids))} still registered "
                    f"{self.profile.timeouts.stop:g}s after they were stopped; see `pxpool status {self.name}`."
                )
            await asyncio.sleep(0.02)

    def _running(self) -> tuple[ipp.Client, ipp.Cluster]:
        if self.state == "idle":
            raise PoolStateError(
                f"Pool {self.name!r} released its engines after idle_timeout; "
                "`pool.wake_sync()` (or any use of its engines) starts them again."
            )
        if self.state != "running" or self._client is None or self._cluster is None:
            raise PoolStateError(
                f"Pool {self.name!r} is {self.state}; call `pool.start_sync()` (or `await pool.start()`) first."
            )
        return self._client, self._cluster

    def _write_record(self) -> None:
        assert self._cluster is not None
        runtime.write_private_json(
            runtime.pool_dir(self.name) / runtime.RECORD_FILE,
            {
                "name": self.name,
                "profile": self.profile.name,
                "profile_settings": runtime.profile_record(self.profile),  # with overrides
                "provider": self.profile.provider,
                "cluster_file": self._cluster.cluster_file,
                "owner_pid": os.getpid(),
                "detached": self.detached,
                "created": time.time(),
                "engine_sets": self._engine_sets,
                "next_id": self._next_id,
            },
        )

    # ------------------------------------------------------------ attach

    @classmethod
    def attach(cls, name: str, timeout: float = 10.0) -> Pool:
        """Connect to a running pool, for example one started by ``pxpool start``."""
        pool = cls._from_record(name)
        if not pool._controller_alive():
            pool.disconnect()
            pool._loop_thread.close()
            raise PoolStateError(
                f"Pool {name!r} is not running any more (its controller is gone); "
                f"remove what is left with `pxpool stop {name}`."
            )
        pool._loop_thread.submit(pool._connect(timeout)).result()
        return pool

    @classmethod
    def stop_by_name(cls, name: str) -> None:
        """Stop a pool started elsewhere (or clean up after one that died)."""
        pool = cls._from_record(name)
        try:
            pool.stop_sync()
        finally:
            pool._loop_thread.close()

    @classmethod
    def _from_record(cls, name: str) -> Pool:
        record = runtime.read_record(name)
        if record is None:
            raise PoolNotFoundError(name, runtime.record_names())
        pool = cls(runtime.record_profile(record), name, detached=bool(record.get("detached")))
        pool._engine_sets = {k: list(v) for k, v in record.get("engine_sets", {}).items()}
        pool._next_id = int(record.get("next_id", 0))
        pool._cluster = pool._loop_thread.submit(_load_cluster(record["cluster_file"])).result()
        pool.state = "attached"
        return pool

    def _controller_alive(self) -> bool:
        return runtime.controller_alive(self.name)

    async def _connect(self, timeout: float) -> None:
        global _current
        assert self._cluster is not None
        try:
            self._client = await self._cluster.connect_client()
        except TimeoutError:
            raise PoolStateError(
                f"Pool {self.name!r} did not answer: its controller runs but does not reply. "
                f"Stop it with `pxpool stop {self.name}` and start it again."
            ) from None
        expected = self._owner_ids()
        deadline = time.monotonic() + timeout
        while not expected <= set(self._client.ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.state = "running"
        _current = self

    def disconnect(self) -> None:
        """Close this process's connection and leave the pool running."""
        global _current
        if self._client is not None:
            self._client.close(linger=0)
        self._client = None
        self._cluster = None
        self.state = "new"
        if _current is self:
            _current = None

    # ------------------------------------------------------------ context managers

    def __enter__(self) -> Pool:
        if self.state != "running":
            self.start_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_sync()

    async def __aenter__(self) -> Pool:
        if self.state != "running":
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _load_cluster(cluster_file: str) -> ipp.Cluster | None:
    """Rebuild a pool's Cluster from its file, on the pool's loop (launchers keep it)."""
    try:
        return PxCluster.from_file(
            cluster_file,
            parent=None,
            log=logging.getLogger("pxpool.ipyparallel"),
            shutdown_atexit=False,
            load_profile=False,
        )
    except (OSError, ValueError, KeyError):
        return None  # nothing left to stop but the directory
