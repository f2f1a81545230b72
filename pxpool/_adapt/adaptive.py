"""The adaptive pool at work: one look per ``interval`` on the pool's loop, one decision.

:class:`Adaptive` belongs to one pool. ``pool.adapt(minimum, maximum, ...)`` arms it;
every ``interval`` seconds it reads the load (:mod:`.load`), asks its
:class:`~pxpool._adapt.policy.Policy` what to do, and does it through the pool's one
engine path:

- **grow**: ``PoolCore.add_engines`` under new ids, in a task of its own so the looks
  go on while a batch job waits in the queue. The engine hooks run on the new engines
  as on any that join: the task lane's agent (queued tasks start there at once), the
  setup replay (names pushed to all engines, ``pool.setup`` code), health, limits.
  A start that fails stops what it started (a pending batch job is cancelled).
- **shrink**: the task lane stops sending to the chosen engines (it declines if a task
  reached them meanwhile: not idle after all), then ``PoolCore.remove_engines`` stops
  their sets; a batch job is cancelled whole.
- **release** (every engine idle and ``minimum`` 0): the idle release of
  :mod:`pxpool._reliability.idle`, so the pool shows ``idle``, its engines
  ``released``, and the next use starts them again and replays the setup.

Every decision goes to the ``pxpool.adapt`` logger and into ``pool.adapt_decisions``
(the last ``LOG_LENGTH``); the panel shows the latest. Adapting stops with
``pool.adapt(False)``, after ``MAX_FAILURES`` failed starts in a row, and with the pool
(a teardown hook; it runs no thread of its own, only a task on the pool's loop).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .._core.state import PoolState
from .._profile.schema import BATCH_PROVIDERS
from ..errors import PoolStateError
from .load import LaneProbe, hub_load, observation
from .policy import Action, Decision, Observation, Policy, check_settings

if TYPE_CHECKING:
    from .._core.core import PoolCore

__all__ = ["AdaptMethods", "Adaptive", "Decision", "Releaser"]

log = logging.getLogger("pxpool.adapt")
TASK_PREFIX = "pxpool-adapt-"  # the asyncio task of the looks: this and the pool's name
LOG_LENGTH = 1000  # decisions kept in pool.adapt_decisions
HUB_TIMEOUT = 10.0  # seconds for the hub to answer queue_status
DEFAULT_INTERVAL = 1.0  # seconds between looks


class Releaser(Protocol):
    """The idle release (:class:`pxpool._reliability.idle.IdleWatch`)."""

    async def release(self, idle_seconds: float, why: str) -> bool: ...


class Adaptive:
    """One pool's adaptive sizing (see the module docstring)."""

    def __init__(self, core: PoolCore, lane: LaneProbe, idle: Releaser) -> None:
        self.core = core
        self.lane = lane
        self.idle = idle
        self.lock = threading.Lock()
        self.policy: Policy | None = None  # None: not adapting
        self.log: collections.deque[Decision] = collections.deque(maxlen=LOG_LENGTH)
        self.starting: set[int] = set()  # ids a grow is starting now
        self._looks: asyncio.Task[None] | None = None
        self._grows: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ caller's thread

    def configure(
        self,
        minimum: int | bool,
        maximum: int | None,
        target_seconds: float,
        idle_seconds: float,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        """``pool.adapt(...)``: start adapting, or change how (``False``: stop; ``True``:
        the defaults, as ``minimum=0``)."""
        if minimum is False:
            self.stop("pool.adapt(False)")
            return
        minimum = 0 if minimum is True else minimum
        if not self.core.state.uses_engines:
            raise PoolStateError(
                f"Pool {self.core.name!r} is {self.core.state}; start it "
                "(`pool.start_sync()`) before `pool.adapt(...)`."
            )
        if maximum is None and isinstance(minimum, int):
            maximum = max(self.core.provider.default_engine_count(), minimum)
        batch = self.core.profile.provider in BATCH_PROVIDERS
        job_size = self.core.profile.batch.engines_per_job if batch else 1
        settings = check_settings(
            minimum, maximum, target_seconds, idle_seconds, interval, job_size
        )
        with self.lock:
            old = self.policy
            self.policy = Policy(settings) if old is None else old.with_settings(settings)
            self._note(Action.ON, settings.describe())
        self._on_loop(self._arm)

    def stop(self, reason: str) -> None:
        """Stop adapting (engines stay as they are; a start under way completes)."""
        with self.lock:
            if self.policy is None:
                return
            self._note(Action.OFF, reason)
            self.policy = None
        self._on_loop(self._disarm)

    def decisions(self) -> list[Decision]:
        with self.lock:
            return list(self.log)

    def teardown(self, name: str) -> None:
        """Teardown hook: the pool stopped, and adapting with it."""
        self.stop(f"pool {name!r} stopped")

    def _on_loop(self, action: Callable[[], None]) -> None:
        loop = self.core.loop.loop
        if loop is None or not loop.is_running():
            return
        if self.core.loop.in_loop():
            action()
        else:
            loop.call_soon_threadsafe(action)

    def _note(self, action: Action, reason: str, engine_ids: tuple[int, ...] = ()) -> None:
        """Log and keep an entry that no look decided (under self.lock)."""
        cycle = self.policy.cycle if self.policy is not None else 0
        engines = len(self.core.owner_ids()) + len(self.starting)
        count = len(engine_ids)
        self._keep(
            Decision(cycle, time.time(), action, engines, engines, reason, count, engine_ids)
        )

    def _keep(self, decision: Decision) -> None:
        self.log.append(decision)
        level = logging.WARNING if decision.action is Action.FAILED else logging.INFO
        log.log(level, "pxpool: pool %r: %s", self.core.name, decision.describe())

    # ------------------------------------------------------------ the looks (pool loop)

    def _arm(self) -> None:
        if self._looks is None or self._looks.done():
            name = f"{TASK_PREFIX}{self.core.name}"
            self._looks = asyncio.get_running_loop().create_task(self._run(), name=name)

    def _disarm(self) -> None:
        looks, self._looks = self._looks, None
        if looks is not None and not looks.done():
            looks.cancel()

    async def _run(self) -> None:
        """A look every ``interval`` while adapting and the pool runs (or is released)."""
        while True:
            policy = self.policy
            if policy is None:
                return
            await asyncio.sleep(policy.settings.interval)
            if not self.core.state.uses_engines:
                self.stop(f"pool {self.core.name!r} is {self.core.state}")
                return
            if self.core.state is not PoolState.RUNNING:
                policy.idle_since.clear()  # released: idle clocks start anew after a wake
                continue
            if policy is not self.policy:
                continue  # settings changed meanwhile
            try:
                await self._look(policy)
            except Exception:  # one bad look must not end adapting
                log.exception("pxpool: adapting pool %r: a look failed", self.core.name)

    async def _look(self, policy: Policy) -> None:
        seen = await self._observe()
        if seen is None:
            return
        decision = policy.decide(seen, time.monotonic())
        if decision is None:
            return
        if decision.action is Action.GROW:
            self._grow(policy, decision)
        elif decision.action is Action.SHRINK:
            await self._shrink(decision)
        elif decision.action is Action.RELEASE:
            await self._release(policy, decision)

    async def _observe(self) -> Observation | None:
        core = self.core
        client = core.client
        if client is None:
            return None
        try:
            status = await asyncio.wait_for(asyncio.to_thread(client.queue_status), HUB_TIMEOUT)
        except Exception as exc:  # a hub that does not answer: no decision this time
            log.debug("pxpool: queue_status of pool %r failed: %r", core.name, exc)
            return None
        moving = core.joining | core.replacing | set(core.operations.snapshot())
        starting = len(self.starting - core.owner_ids())
        return observation(
            core.engine_sets,
            core.registered_ids(),
            moving,
            starting,
            self.lane.load(),
            hub_load(status),
        )

    def _grow(self, policy: Policy, decision: Decision) -> None:
        ids = self.core.take_ids(decision.count)
        with self.lock:
            self._keep(dataclasses.replace(decision, engine_ids=tuple(ids)))
        self.starting.update(ids)
        task = asyncio.ensure_future(self._start(policy, ids))
        self._grows.add(task)
        task.add_done_callback(self._grows.discard)

    async def _start(self, policy: Policy, ids: list[int]) -> None:
        try:
            await self.core.add_engines(ids)
        except Exception as exc:
            if self.core.state is not PoolState.RUNNING:
                return  # stopped (or released) meanwhile: not a failed start
            await self._undo_start(ids)
            give_up = policy.failed(time.monotonic())
            why = f"starting engines failed: {type(exc).__name__}: {exc}"
            with self.lock:
                self._note(Action.FAILED, why, tuple(ids))
            if give_up and policy is self.policy:
                self.stop(
                    f"{policy.failures} starts failed in a row; fix the cause (see the "
                    "log) and call pool.adapt(...) again"
                )
        else:
            policy.succeeded()
        finally:
            self.starting.difference_update(ids)

    async def _undo_start(self, ids: list[int]) -> None:
        """Stop what a failed start left (a batch job still pending, engines that came)."""
        owned = sorted(set(ids) & self.core.owner_ids())
        if not owned or self.core.state is not PoolState.RUNNING:
            return
        try:
            await self.core.remove_engines(owned)
        except Exception as exc:
            log.warning("pxpool: cleaning up a failed start of %s: %r", owned, exc)

    async def _shrink(self, decision: Decision) -> None:
        ids = list(decision.engine_ids)
        if not self.lane.retire(ids):
            return  # a lane task reached them since the look: not idle after all
        with self.lock:
            self._keep(decision)
        try:
            await self.core.remove_engines(ids)
        except Exception as exc:
            if self.core.state is PoolState.RUNNING:  # (a pool stopping meanwhile took them)
                with self.lock:
                    why = f"stopping engines failed: {type(exc).__name__}: {exc}"
                    self._note(Action.FAILED, why, tuple(ids))
        finally:
            self.lane.retire(ids, retired=False)

    async def _release(self, policy: Policy, decision: Decision) -> None:
        why = f"had no work for {policy.settings.idle_seconds:g}s (adaptive, minimum=0)"
        if await self.idle.release(policy.settings.idle_seconds, why):
            with self.lock:
                self._keep(decision)


class AdaptMethods:
    """The adaptive half of :class:`pxpool.Pool`'s methods, over its :class:`Adaptive`."""

    _adaptive: Adaptive

    def adapt(
        self,
        minimum: int | bool = 0,
        maximum: int | None = None,
        *,
        target_seconds: float = 5.0,
        idle_seconds: float = 60.0,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        """Size the pool to its load, between ``minimum`` and ``maximum`` engines (default:
        the profile's count): whole jobs start while tasks wait, enough for the work to
        take about ``target_seconds``; jobs idle for ``idle_seconds`` stop (all of them,
        as an idle release, with ``minimum=0``). ``adapt(False)`` stops adapting; calling
        it again changes the settings. See :mod:`pxpool._adapt`."""
        self._adaptive.configure(minimum, maximum, target_seconds, idle_seconds, interval)

    @property
    def adapt_decisions(self) -> list[Decision]:
        """What adapting did and why, oldest first (also logged to ``pxpool.adapt``)."""
        return self._adaptive.decisions()
