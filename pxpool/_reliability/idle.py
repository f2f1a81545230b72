"""Idle shutdown and core-hours: release a pool's engines when it has no work, start
them again on the next use, and count the core-hours its engines held.

With ``idle_timeout`` set in the profile, a pool whose engines had no work for that
long (no pool method running, nothing outstanding for this process's client, nothing
queued or running on any engine according to the hub) stops its engines: batch jobs
are cancelled, engine processes end, the controller stays. ``pool.state`` is then
``"idle"`` and ``pool.health()`` shows the engines as ``released``. The next use
through the pool (``map``, ``apply``, ``execute``, ``push``, ``pull``, ``scatter``,
``gather``, ``view``, ``lbview``, ``client``, ``%%px``, or ``pool.wake()``) starts the
same engines again with the same settings, waits for them within ``timeouts.start``,
replays the pool's setup (pushed names and setup cells) and only then runs the call.

The check runs every ``TICK_SECONDS`` on the pool's own event loop (no extra thread)
and stops with the pool. Core-hours count, for every engine the pool ever started,
``cores_per_engine`` (1 outside batch profiles) times the time it was registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from .._core import runtime
from .._core.state import PoolState
from .._profile.schema import BATCH_PROVIDERS
from ..errors import PoolStateError
from ..health import EngineState

if TYPE_CHECKING:
    from .._core.core import PoolCore
    from ..health import EngineSnapshot

__all__ = ["IdleWatch", "mark_released", "read_state"]

log = logging.getLogger("pxpool.idle")
TICK_SECONDS = 1.0  # how often a pool checks whether it is idle
WATCH_TASK_PREFIX = "pxpool-idle-"  # the check's asyncio task: this and the pool's name
HUB_QUERY_TIMEOUT = 10.0  # seconds for the hub to answer queue_status
STATE_FILE = "idle.json"  # in the pool's directory, for `pxpool status` in other processes
# True inside a wake: the setup replay and engine hooks use the pool without waking it
_waking: contextvars.ContextVar[bool] = contextvars.ContextVar("pxpool_waking", default=False)


class CoreClock:
    """Seconds each engine id was registered, times the cores each engine holds."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self.open: dict[int, float] = {}  # engine id -> time.time() it joined
        self.closed = 0.0  # engine-seconds of engines that left
        self.lock = threading.Lock()

    def opened(self, engine_ids: list[int], now: float) -> None:
        with self.lock:
            for engine_id in engine_ids:
                self.open.setdefault(engine_id, now)

    def close(self, engine_ids: set[int], now: float) -> None:
        with self.lock:
            for engine_id in engine_ids & set(self.open):
                self.closed += max(now - self.open.pop(engine_id), 0.0)

    def core_seconds(self, now: float) -> float:
        with self.lock:
            alive = sum(max(now - start, 0.0) for start in self.open.values())
            return (self.closed + alive) * self.cores


class IdleWatch:
    """One per pool: the idle check, the release, the wake and the core clock."""

    def __init__(self, pool: PoolCore) -> None:
        self.pool = pool
        self.owner = False  # set when engines join: True in the process that started the pool
        self.timeout = 0.0
        self.clock = CoreClock(pool.profile.batch.cores_per_engine)
        self.lock = threading.Lock()  # held while releasing, waking, or starting a call
        self.count_lock = threading.Lock()
        self.calls = 0  # pool methods running now
        self.last_use = time.monotonic()
        self.released_ids: list[int] = []
        self.released_at: float | None = None  # time.time() of the last release
        self.releases = 0
        self._lost: set[int] = set()  # stopped by a release that failed part way
        self._watching: asyncio.Task[None] | None = None  # the check, while the pool runs

    # ------------------------------------------------------------ engine hook (any thread)

    def engines_joined(self, pool: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: count the engines' core time; release them once idle_timeout
        passed (only in the process that started the pool)."""
        # only the process that started the pool releases it and records its core-hours
        record = runtime.read_record(pool.name) or {}
        self.owner = record.get("owner_pid") == os.getpid()
        self.timeout = pool.profile.idle_timeout if self.owner else 0.0
        self.clock.opened(engine_ids, time.time())
        self.last_use = time.monotonic()
        self.write_state()
        loop = pool.loop.loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._arm)

    # ------------------------------------------------------------ the check (pool loop)

    def _arm(self) -> None:
        running = self._watching is not None and not self._watching.done()
        if not running and self.pool.state is PoolState.RUNNING:
            name = f"{WATCH_TASK_PREFIX}{self.pool.name}"
            self._watching = asyncio.get_running_loop().create_task(self._watch(), name=name)

    async def _watch(self) -> None:
        """Check every TICK_SECONDS until the pool stops running (stopped, or released:
        nothing to watch until a wake arms it again)."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if not self._tick():
                return

    def _tick(self) -> bool:
        """One check; False once the pool no longer runs."""
        pool = self.pool
        if pool.state is not PoolState.RUNNING:
            if pool.state is not PoolState.IDLE:
                self.clock.close(set(self.clock.open), time.time())
                self.write_state()
            return False
        client = pool.client
        registered = set(client.ids) if client is not None else set()
        gone = set(self.clock.open) - registered - set(self.released_ids)
        if gone:
            self.clock.close(gone, time.time())
            self.write_state()
        if self.timeout > 0 and self.idle_for() >= self.timeout and not self.lock.locked():
            asyncio.ensure_future(self._release())
        return True

    def idle_for(self) -> float:
        """Seconds since this pool last had work in this process (0 while it has)."""
        client = self.pool.client
        if self.calls or client is None or client.outstanding:
            self.last_use = time.monotonic()
        return time.monotonic() - self.last_use

    async def _hub_busy(self) -> bool:
        """True when the hub lists a task queued or running on any engine (also tasks
        of other clients); a hub that does not answer counts as busy."""
        client = self.pool.client
        if client is None:
            return True
        try:
            status = await asyncio.wait_for(
                asyncio.to_thread(client.queue_status), HUB_QUERY_TIMEOUT
            )
        except Exception as exc:
            log.debug("pxpool: queue_status of pool %r failed: %r", self.pool.name, exc)
            return True
        if status.get("unassigned"):
            return True
        return any(
            isinstance(s, dict) and (s.get("queue") or s.get("tasks")) for s in status.values()
        )

    async def _release(self) -> None:
        why = f"had no work for {self.timeout:g}s (idle_timeout)"
        await self.release(self.timeout, why)

    async def release(self, idle_seconds: float, why: str) -> bool:
        """Release every engine now if the pool had no work for ``idle_seconds`` (also
        none on the hub); True if it did. ``why`` goes into the log line. On the pool's
        loop; idle_timeout and adaptive pools (``minimum = 0``) both release this way."""
        pool = self.pool
        if not self.lock.acquire(blocking=False):
            return False  # a call or a wake is starting: not idle
        ids: list[int] = []
        try:
            if pool.state is not PoolState.RUNNING or self.idle_for() < idle_seconds:
                return False
            if await self._hub_busy():
                self.last_use = time.monotonic()
                return False
            ids = sorted(pool.owner_ids() | self._lost)
            if not ids or self.calls:
                return False
            # every engine set at once: a batch system cancels its jobs in parallel
            await asyncio.gather(*(pool.remove_engines(list(s)) for s in pool.engine_sets.values()))
            if pool.state is not PoolState.RUNNING:
                return False  # stopped meanwhile
            pool.state = PoolState.IDLE
            self.released_ids, self.released_at, self._lost = ids, time.time(), set()
            self.releases += 1
            self.clock.close(set(ids), time.time())
            pool.write_record()
            self.write_state()
            log.warning(
                "pxpool: pool %r %s: released its %d "
                "engine(s)%s; the next use of the pool starts them again.",
                pool.name,
                why,
                len(ids),
                " and cancelled their batch jobs"
                if pool.profile.provider in BATCH_PROVIDERS
                else "",
            )
            return True
        except Exception as exc:  # the pool runs on; the next release also covers these
            if pool.state is PoolState.RUNNING:  # (a pool stopped meanwhile needs no word)
                self._lost |= set(ids) - pool.owner_ids()
                log.warning("pxpool: releasing idle pool %r failed: %r", pool.name, exc)
            return False
        finally:
            self.lock.release()

    # ------------------------------------------------------------ waking (caller's thread)

    def enter(self) -> bool:
        """A pool method starts: count it (True), and start released engines first."""
        if _waking.get():
            return False
        pool = self.pool
        if pool.loop.in_loop():
            if pool.state is PoolState.IDLE:
                raise PoolStateError(
                    f"Pool {pool.name!r} released its engines after idle_timeout="
                    f"{self.timeout:g}s; on the pool's own loop, `await pool.wake()` first."
                )
            return False
        with self.lock:
            with self.count_lock:
                self.calls += 1
            self.last_use = time.monotonic()
            if pool.state is PoolState.IDLE:
                try:
                    self._wake_blocking()
                except BaseException:
                    self.leave(True)
                    raise
        return True

    def leave(self, counted: bool) -> None:
        if not counted:
            return
        with self.count_lock:
            self.calls = max(self.calls - 1, 0)
        self.last_use = time.monotonic()

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Around a pool method that uses engines: wake a released pool first, and
        count the call as work while it runs."""
        counted = self.enter()
        try:
            yield
        finally:
            self.leave(counted)

    def wake_if_released(self) -> None:
        """Start released engines again (blocking); a no-op when the pool has them."""
        self.leave(self.enter())

    async def wake(self) -> None:
        """Start the engines released after ``idle_timeout`` again (a no-op otherwise)."""
        if self.pool.state is not PoolState.IDLE:
            return
        await asyncio.to_thread(self.wake_if_released)

    def core_hours(self) -> float:
        """Core-hours used by the pool's engines so far in this process."""
        return self.clock.core_seconds(time.time()) / 3600.0

    def _wake_blocking(self) -> None:
        profile = self.pool.profile
        limit = profile.timeouts.start + 2 * profile.timeouts.stop + 120.0  # + setup replay
        self.pool.loop.submit(self._wake()).result(timeout=limit)

    async def _wake(self) -> None:
        """Start the released engines under their ids, wait for them, replay the setup."""
        _waking.set(True)
        pool = self.pool
        client, cluster = pool.client, pool.cluster
        if pool.state is not PoolState.IDLE or client is None or cluster is None:
            return
        ids = list(self.released_ids)
        log.info("pxpool: pool %r is used again: starting its %d engine(s)", pool.name, len(ids))
        pool.state = PoolState.RUNNING
        try:
            await pool.add_engines(ids)  # hooks: debugger, setup replay, health, this clock
        except BaseException:
            if pool.state is PoolState.RUNNING:  # not stopped meanwhile: idle again, as before
                try:
                    await pool.remove_engines(sorted(pool.owner_ids()))
                except Exception as exc:
                    log.warning("pxpool: cleaning up a failed wake of %r: %r", pool.name, exc)
                pool.state = PoolState.IDLE
                pool.write_record()
            raise
        if pool.state is not PoolState.RUNNING:
            raise PoolStateError(f"Pool {pool.name!r} was stopped while its engines started.")
        self.released_ids, self.released_at = [], None
        pool.write_record()
        self.write_state()
        self.last_use = time.monotonic()

    # ------------------------------------------------------------ state for other processes

    def write_state(self) -> None:
        directory = runtime.pool_dir(self.pool.name)
        if not self.owner or not directory.is_dir():
            return
        with self.clock.lock:
            closed, opened = self.clock.closed, dict(self.clock.open)
        try:
            runtime.write_private_json(
                directory / STATE_FILE,
                {
                    "idle_timeout": self.timeout,
                    "cores_per_engine": self.clock.cores,
                    "engine_seconds": closed,
                    "open": {str(k): v for k, v in opened.items()},
                    "released_ids": self.released_ids,
                    "released_at": self.released_at,
                },
            )
        except OSError:
            pass  # the pool is being removed


def read_state(name: str) -> dict[str, Any] | None:
    """What the owning process wrote of pool ``name``: core-hours and idle release."""
    import json

    try:
        data = json.loads((runtime.pool_dir(name) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    now = time.time()
    alive = sum(max(now - float(start), 0.0) for start in data.get("open", {}).values())
    data["core_hours"] = (float(data["engine_seconds"]) + alive) * data["cores_per_engine"] / 3600
    return cast("dict[str, Any]", data)


def mark_released(name: str, snapshots: list[EngineSnapshot]) -> list[EngineSnapshot]:
    """``pxpool status`` in another process: engines pool ``name``'s owner released
    after idle_timeout show as ``released`` rather than ``stopped``."""
    released = set((read_state(name) or {}).get("released_ids") or ())
    return [
        dataclasses.replace(s, state=EngineState.RELEASED)
        if s.engine_id in released and s.state == EngineState.STOPPED
        else s
        for s in snapshots
    ]
