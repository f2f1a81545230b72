"""A pool's life: start, scale, stop, and attaching from another process.

Coroutines here run on the pool's own loop (:class:`pxpool._core.loop.LoopThread`),
since ipyparallel's launchers report process exits through the loop they were first
used on. A pool that fails to start stops whatever it had started; teardown also
runs after a partial start and after a controller died.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import PoolNotFoundError, PoolStateError
from . import runtime, security, stop_request
from .cluster import PxCluster
from .core import PoolCore
from .processes import local_process_tree, processes_of_pool, reap
from .startup import StartupWatch, controller_args, controller_launcher
from .state import PoolState

log = logging.getLogger("pxpool.pool")
TERMINATE_GRACE_SECONDS = 3.0
CONNECT_POLL = 0.05
# ipyparallel logs every engine's output at WARNING when it stops; pxpool reports
# failures itself, with that output attached, so keep its own log quiet by default.
IPYPARALLEL_LOG = logging.getLogger("pxpool.ipyparallel")
IPYPARALLEL_LOG.setLevel(logging.CRITICAL)


async def start(core: PoolCore, wait: bool, timeout: float | None, engines: int | None) -> None:
    """Start the controller and ``engines`` engines (the provider's default if None).
    The caller checked that no pool of this name runs (a controller batch job too)."""
    if core.state not in (PoolState.NEW, PoolState.STOPPED, PoolState.FAILED):
        raise PoolStateError(
            f"Pool {core.name!r} is {core.state}; stop it before starting it again."
        )
    timeout = core.profile.timeouts.start if timeout is None else timeout
    count = core.provider.default_engine_count() if engines is None else engines
    core.state = PoolState.STARTING
    core.stopped_by = None
    core.cluster = cluster = _new_cluster(core)
    try:
        ids = core.take_ids(count)
        await _start_processes(
            core, cluster, ids, StartupWatch(cluster, core.profile, timeout), wait
        )
    except BaseException:
        core.state = PoolState.FAILED
        await teardown(core)
        raise
    core.state = PoolState.RUNNING
    if core.stop_requests is not None:
        core.stop_requests.watch()  # another process's `pxpool stop NAME` asks this one
    if wait:
        await core.engines_ready(ids)


def _new_cluster(core: PoolCore) -> PxCluster:
    runtime.remove_pool_dir(core.name)
    directory = runtime.pool_dir(core.name, create=True)
    security.prepare_profile_dir(directory, core.profile.controller)
    return PxCluster(
        cluster_id=core.name,
        profile_dir=str(directory),
        parent=None,
        log=IPYPARALLEL_LOG,
        load_profile=False,
        shutdown_atexit=not core.detached,
        delay=0,
        n=0,
        controller_args=controller_args(core.profile.controller),
        send_engines_connection_env=not core.provider.starts_before_controller,
        engine_launcher_class=core.provider.engine_launcher_class,
        **controller_launcher(core.provider),
    )


async def _start_processes(
    core: PoolCore, cluster: PxCluster, ids: list[int], watch: StartupWatch, wait: bool
) -> None:
    """Controller, client and engines; engines that can start first import while the
    controller starts, then read its connection file."""
    early = core.provider.starts_before_controller
    if early:
        await watch.launch_controller()
        await core.launch(cluster, ids)
    await watch.controller_started()
    core.client = await cluster.connect_client()
    if not early:
        await core.launch(cluster, ids)
    core.write_record()
    if wait:
        await watch.engines_registered(core.client, ids, core.engine_sets)


async def scale(core: PoolCore, n: int) -> list[int]:
    """Grow or shrink the pool to ``n`` engines; the engine ids afterwards."""
    if n < 0:
        raise ValueError(f"scale(n) needs n >= 0; got {n}")
    core.running()
    have = core.registered_ids()
    if n > len(have):
        await core.add_new_engines(n - len(have))
    elif n < len(have):
        await core.remove_engines(have[n:])
    return core.registered_ids()


async def stop(core: PoolCore) -> None:
    """Stop every engine and the controller; safe to call twice."""
    if core.state in (PoolState.NEW, PoolState.STOPPED):
        return
    core.state = PoolState.STOPPING
    await teardown(core)
    core.state = PoolState.STOPPED


async def teardown(core: PoolCore) -> None:
    """Release everything this pool started, also after a partial start or after its
    controller died. Graceful stops get a bounded time; then what is left of the
    pool's processes gets SIGTERM and, after a grace period, SIGKILL."""
    if core.client is not None:
        core.client.close(linger=0)
        core.client = None
    cluster, core.cluster = core.cluster, None
    if cluster is not None and runtime.local_controller_alive(core.name):
        await _stop_gracefully(core, cluster)
    try:
        await core.provider.release(cluster)
    except Exception as exc:
        log.warning(
            "pxpool: releasing pool %r's %s resources failed: %r",
            core.name,
            core.profile.provider,
            exc,
        )
    leftovers = processes_of_pool(str(runtime.pool_dir(core.name)))
    if cluster is not None:
        leftovers += local_process_tree(cluster)
    await reap(leftovers, TERMINATE_GRACE_SECONDS, terminate=True)
    core.engine_sets.clear()
    runtime.remove_pool_dir(core.name)
    for release in list(core.teardown_hooks):  # shared memory of its transfers, say
        try:
            release(core.name)
        except Exception:
            log.exception("pxpool: teardown hook %r failed for pool %r", release, core.name)


async def _stop_gracefully(core: PoolCore, cluster: PxCluster) -> None:
    stop_timeout = core.profile.timeouts.stop
    engine_processes = local_process_tree(cluster, "engines")
    try:
        # engines first: their nannies exit promptly only while the hub answers
        await asyncio.wait_for(cluster.stop_engines(), stop_timeout)
        await reap(engine_processes, stop_timeout)
        await asyncio.wait_for(cluster.stop_controller(), stop_timeout)
    except Exception as exc:  # keep cleaning up; the sweep after this ends the rest
        log.warning("pxpool: stopping pool %r did not finish cleanly: %r", core.name, exc)


# ---------------------------------------------------------------- another process's pool


def owner_stopped_it(name: str) -> bool:
    """Ask the live process that owns pool ``name`` to stop it; True once it has
    (:mod:`pxpool._core.stop_request`)."""
    record = runtime.read_record(name)
    owner = record.get("owner_pid") if record else None
    return isinstance(owner, int) and stop_request.ask_owner(name, owner)


def read_record_or_raise(name: str) -> dict[str, Any]:
    """The record of pool ``name``; PoolNotFoundError listing known pools if none."""
    record = runtime.read_record(name)
    if record is None:
        raise PoolNotFoundError(name, runtime.record_names())
    return record


async def adopt_record(core: PoolCore, record: dict[str, Any]) -> None:
    """Take engine sets and the cluster from a pool's record (on the pool's loop:
    launchers keep the loop they were made on)."""
    core.engine_sets = {k: list(v) for k, v in record.get("engine_sets", {}).items()}
    core.next_id = int(record.get("next_id", 0))
    core.cluster = _load_cluster(record["cluster_file"])
    core.state = PoolState.ATTACHED


def _load_cluster(cluster_file: str) -> PxCluster | None:
    try:
        cluster: PxCluster = PxCluster.from_file(
            cluster_file,
            parent=None,
            log=IPYPARALLEL_LOG,
            shutdown_atexit=False,
            load_profile=False,
        )
    except (OSError, ValueError, KeyError):
        return None  # nothing left to stop but the directory
    return cluster


async def connect(core: PoolCore, timeout: float) -> None:
    """Connect a client and wait (bounded) until the recorded engines are registered."""
    if core.cluster is None:
        raise PoolStateError(
            f"Pool {core.name!r} has no readable cluster file; "
            f"remove what is left with `pxpool stop {core.name}`."
        )
    try:
        core.client = client = await core.cluster.connect_client()
    except TimeoutError:
        raise PoolStateError(
            f"Pool {core.name!r} did not answer: its controller runs but does not reply. "
            f"Stop it with `pxpool stop {core.name}` and start it again."
        ) from None
    expected = core.owner_ids()
    deadline = time.monotonic() + timeout
    while not expected <= set(client.ids) and time.monotonic() < deadline:
        await asyncio.sleep(CONNECT_POLL)
    core.state = PoolState.RUNNING


def disconnect(core: PoolCore) -> None:
    """Close this process's connection and leave the pool running."""
    if core.client is not None:
        core.client.close(linger=0)
    core.client = None
    core.cluster = None
    core.state = PoolState.NEW
