"""Self-healing: notice engines that die, say how, replace them, replay their setup.

The pool's cluster reports engine sets that stop without being asked
(:meth:`pxpool._core.cluster.PxCluster.add_death_listener`). The supervisor records how
each engine died (signal, exit code, out of memory when the kernel's OOM killer
counted a kill) and, with ``restart = "on-failure"`` in the profile, starts a new
engine under the same id after ``restart_backoff`` seconds.

A replacement *fails* when its engine ends by itself before it came up: it exits
(or crashes, or runs out of memory) before it registered, or before the pool ran its
engine hooks on it and released it (the setup replay below), or within
``JOIN_GRACE`` of that. A start that raises for another reason (a timeout, a
provider's error) fails too, but not one that registered under another id because
the controller still reserves its own: that one is tried again once the id is free.
A replacement killed with SIGKILL that the kernel's OOM killer did not send was
killed, not broken: it is replaced again after ``restart_backoff`` like any killed
engine. Each failure doubles the wait before that id's next try, up to
:attr:`RestartBudget.longest_wait`. ``max_restarts`` is a budget per
``restart_window`` seconds (:class:`RestartBudget`): once that many replacements of
one id failed within the window, the engine is in a crash loop and is not replaced
again; an error in the log says so and how to restart it by hand, and health shows
it ``dead``. Engines that came up and die later, and engines killed from outside at
any time, do not count: they are always replaced.

Engines that join later (restarts, ``scale``) first replay what the user set up on
every engine: names pushed to all engines with ``pool.push`` and code run with
``pool.setup(code)`` / ``%%px --setup``, in the order they happened. ipyparallel
leaves this to the user (its issue #706).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._core.startup import REGISTRATION_HOLD_SECONDS
from .._core.state import PoolState
from ..engines.cgroups import engine_group, oom_kills, oom_kills_since_joined
from ..errors import EngineIdReserved
from .lost import LOST_HOW, LostWatch
from .walltime import walltime_exit

if TYPE_CHECKING:
    from .._core.core import PoolCore

log = logging.getLogger("pxpool.supervisor")
DEATH_REPORT_WAIT = 1.0  # seconds a lost task waits for its engine's exit report
DEATH_SLACK = 5.0  # seconds: a death recorded this long before the loss was seen counts
PushTo = Callable[[dict[str, Any], list[int]], None]  # (namespace, engine ids)
# the controller reserves the id of an engine that died while registering this long;
# a big pool on a busy machine needs that long to register (32 engines on 2 cores: 16 s)
MAX_BACKOFF = 30.0  # seconds: the longest wait before trying to replace an engine again
REPLAY_TIMEOUT = 120.0  # seconds for a new engine to replay the pool's setup
# a death this soon after a replacement came up is that replacement failing (the death
# of an engine that died while being released may reach the supervisor just after)
JOIN_GRACE = 0.5
DEATH_WAIT = 0.5  # seconds a start that failed waits for its engine's death to be told
DEATH_POLL = 0.02
SSH_LOST = 255  # ssh's exit status when the remote command was killed or the link dropped
SSH_LOST_HOW = (
    "its ssh session ended with status 255: the engine was killed on its host, "
    "or the connection to the host dropped"
)


@dataclass(frozen=True)
class Death:
    engine_ids: tuple[int, ...]
    how: str  # "killed by SIGKILL", "exited with code 3", "out of memory: ..."
    exit_code: int | None
    when: float

    @property
    def killed(self) -> bool:
        """SIGKILL that the kernel's OOM killer did not send: something killed the
        engine, it did not fail by itself."""
        return self.exit_code == -signal.SIGKILL and not self.how.startswith("out of memory")


def describe_exit(exit_code: int | None, oom_before: int, oom_after: int) -> str:
    if exit_code is None:
        return "stopped with an unknown status"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        if -exit_code == signal.SIGKILL and oom_after > oom_before:
            return "out of memory: the kernel's OOM killer ended it with SIGKILL"
        return f"killed by {name}"
    return f"exited with code {exit_code}"


@dataclass
class RestartBudget:
    """Which replacements of each engine id failed to come up, and when: the wait
    before the next try and whether an id is in a crash loop (see the module)."""

    limit: int  # max_restarts: failed replacements of one id allowed per window
    window: float  # restart_window, seconds
    backoff: float  # restart_backoff, seconds: the first wait, doubled per failure
    failures: dict[int, deque[float]] = field(default_factory=dict)  # monotonic times
    doublings: Counter[int] = field(default_factory=Counter)
    up_at: dict[int, float] = field(default_factory=dict)  # a replacement came up

    @property
    def longest_wait(self) -> float:
        """The back-off's cap: short enough that ``limit`` failures fit in the window
        (so a crash loop is always stopped), at most ``MAX_BACKOFF``, and never
        shorter than ``backoff``."""
        fit = self.window / (2 * self.limit) if self.limit else MAX_BACKOFF
        return max(self.backoff, min(MAX_BACKOFF, fit))

    def recent(self, engine_id: int, now: float) -> int:
        """Failed replacements of ``engine_id`` within the window ending ``now``."""
        times = self.failures.get(engine_id)
        while times and now - times[0] > self.window:
            times.popleft()
        return len(times) if times else 0

    def used_up(self, engine_id: int, now: float) -> bool:
        return self.recent(engine_id, now) >= self.limit

    def delay(self, engine_id: int) -> float:
        """Seconds to wait before the next replacement of ``engine_id``."""
        doubled: float = self.backoff * 2.0 ** min(self.doublings[engine_id], 30)
        return min(doubled, self.longest_wait)

    def failed(self, engine_id: int, now: float) -> None:
        self.failures.setdefault(engine_id, deque()).append(now)
        self.doublings[engine_id] += 1
        self.up_at.pop(engine_id, None)

    def came_up(self, engine_id: int, now: float) -> None:
        """A replacement came up: its id's wait starts short again (the failures stay
        counted for the window)."""
        self.doublings.pop(engine_id, None)
        self.up_at[engine_id] = now

    def ended(self, engine_id: int, death: Death | None, now: float) -> None:
        """A replacement did not come up, or died ``JOIN_GRACE`` after: a failure,
        unless something killed it (``death`` is None: the start failed otherwise)."""
        self.up_at.pop(engine_id, None)
        if death is None or not death.killed:
            self.failed(engine_id, now)

    def died(self, engine_id: int, death: Death, now: float) -> None:
        """A death outside a replacement: if the replacement had only just come up,
        it did not really come up."""
        up = self.up_at.get(engine_id)
        if up is not None and now - up < JOIN_GRACE:
            self.ended(engine_id, death, now)

    def forget(self, engine_id: int) -> None:
        """A fresh budget (the engine was restarted by hand)."""
        self.failures.pop(engine_id, None)
        self.doublings.pop(engine_id, None)
        self.up_at.pop(engine_id, None)


class SetupLog:
    """What every engine should have: pushes to all engines and setup code, in order."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []

    def record_push(self, namespace: dict[str, Any]) -> None:
        names = set(namespace)
        kept: list[tuple[str, Any]] = []
        for kind, value in self.steps:  # a name pushed again replaces its earlier value
            if kind == "push":
                value = {k: v for k, v in value.items() if k not in names}
                if not value:
                    continue
            kept.append((kind, value))
        self.steps = [*kept, ("push", dict(namespace))]

    def record_code(self, code: str) -> None:
        self.steps.append(("code", code))

    def replay(self, core: PoolCore, push: PushTo, engine_ids: list[int]) -> None:
        for kind, value in self.steps:
            if kind == "push":
                push(value, engine_ids)
            else:
                result = core.live_client()[engine_ids].execute(value, block=False)
                result.get(timeout=REPLAY_TIMEOUT)


class Supervisor:
    """Owned by one pool; its methods run on the pool's event loop."""

    def __init__(self, core: PoolCore, replay_push: PushTo) -> None:
        self.core = core
        self.replay_push = replay_push  # pushes replay through the pool's data path
        self.setup = SetupLog()
        self.deaths: dict[int, Death] = {}
        self._recorded = threading.Condition()  # notified as each death is recorded
        profile = core.profile
        self.budget = RestartBudget(
            profile.max_restarts, profile.restart_window, profile.restart_backoff
        )
        self.given_up: dict[int, str] = {}  # ids in a crash loop, not replaced: the reason
        self.lost = LostWatch(core, self.engines_lost)
        self._died_again: dict[int, Death] = {}  # ...whose new engine died meanwhile
        self._id_free_at: dict[int, float] = {}  # monotonic time the controller frees an id
        self._oom_seen = oom_kills()
        self._clusters: set[int] = set()
        self.ids_by_uuid: dict[str, int] = {}  # the client forgets a dead engine's uuid

    def engine_of(self, uuid: str | None) -> int | None:
        """The engine id of ``uuid``: one the pool's hooks saw, or one registered now
        (an engine that died while joining was registered, but not yet hooked)."""
        if not uuid:
            return None
        if uuid not in self.ids_by_uuid:
            try:
                registered = self.core.engine_uuids()
            except Exception:  # the pool stopped meanwhile
                return None
            self.ids_by_uuid.update({str(u): i for i, u in registered.items()})
        return self.ids_by_uuid.get(uuid)

    def watch(self) -> None:
        cluster = self.core.cluster
        if cluster is not None and id(cluster) not in self._clusters:
            self._clusters.add(id(cluster))
            self._oom_seen = oom_kills()
            cluster.add_death_listener(self.engine_set_died)
        self.lost.watch()

    def engines_lost(self, ids: tuple[int, ...]) -> None:
        """Engines the hub dropped while their set runs on (:mod:`.lost`): replaced as
        dead engines are (the restart takes their whole set down and up again)."""
        death = Death(ids, LOST_HOW, None, time.time())
        self._record(death)
        log.warning("pxpool: engines %s of pool %r lost: %s", list(ids), self.core.name, LOST_HOW)
        if self.core.profile.restart != "on-failure" or ids[0] in self.given_up:
            return
        if ids[0] not in self.core.replacing:
            self.budget.died(ids[0], death, time.monotonic())
            asyncio.ensure_future(self._replace(ids[0]))

    def engine_set_died(self, set_id: str, stop_data: dict[str, Any]) -> None:
        ids = tuple(self.core.engine_sets.get(set_id, ()))
        if not ids or self.core.state is not PoolState.RUNNING:
            return  # a replacement that died while starting: its _replace goes on
        group = engine_group(self.core.name, set_id)  # its own memory cgroup, if any
        if group is not None:
            how = describe_exit(stop_data.get("exit_code"), 0, oom_kills_since_joined(group))
        else:  # engines that share this process's cgroup: any new OOM kill there
            oom_now = oom_kills()
            how = describe_exit(stop_data.get("exit_code"), self._oom_seen, oom_now)
            self._oom_seen = oom_now
        if stop_data.get("how"):  # the provider knows better (Kubernetes: OOMKilled)
            how = str(stop_data["how"])
        if stop_data.get("exit_code") == SSH_LOST and self.core.profile.provider == "ssh":
            how = SSH_LOST_HOW  # ssh's own status: the remote side cannot tell us more
        drained = walltime_exit(self.core.name, ids)  # left on a walltime or preemption signal
        how = drained or how
        death = Death(ids, how, stop_data.get("exit_code"), time.time())
        self._record(death)
        log.warning("pxpool: engines %s of pool %r died: %s", list(ids), self.core.name, how)
        if drained or self.core.profile.restart != "on-failure" or ids[0] in self.given_up:
            return  # a drained engine did not fail: replace_on_walltime replaces it
        if ids[0] in self.core.replacing:
            self._died_again[ids[0]] = death  # while being replaced: it goes again
        else:
            self.budget.died(ids[0], death, time.monotonic())
            asyncio.ensure_future(self._replace(ids[0]))

    def engines_joined(self, core: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: watch the pool's engines for deaths; replay the setup on new
        engines."""
        known = core.engine_uuids()
        self.ids_by_uuid.update({known[i]: i for i in engine_ids if i in known})
        for engine_id in engine_ids:
            if self.given_up.pop(engine_id, None) is not None:  # restarted by hand
                self.budget.forget(engine_id)
        loop = core.loop.loop
        assert loop is not None
        loop.call_soon_threadsafe(self.watch)
        if self.setup.steps:
            self.setup.replay(core, self.replay_push, engine_ids)

    def _record(self, death: Death) -> None:
        with self._recorded:
            for engine_id in death.engine_ids:
                self.deaths[engine_id] = death
            self._recorded.notify_all()

    def death_since(self, engine_id: int, left_at: float) -> str | None:
        """How ``engine_id`` died, if recorded near ``left_at`` (when seen gone) or later."""
        death = self.deaths.get(engine_id)
        return death.how if death is not None and death.when >= left_at - DEATH_SLACK else None

    def wait_for_death(self, engine_id: int, left_at: float) -> str:
        """How ``engine_id`` died, once its exit report is in (bounded: see above)."""
        with self._recorded:
            self._recorded.wait_for(
                lambda: self.death_since(engine_id, left_at) is not None, DEATH_REPORT_WAIT
            )
        return self.how_died(engine_id)

    def how_died(self, engine_id: int | None) -> str:
        death = self.deaths.get(engine_id) if engine_id is not None else None
        return death.how if death else "it stopped answering and the controller dropped it"

    async def _replace(self, engine_id: int) -> None:
        """Start a new engine under ``engine_id`` until one comes up, the pool stops,
        or the id's restart budget is used up; one such loop per id at a time."""
        self.core.replacing.add(engine_id)
        try:
            while self.core.state is PoolState.RUNNING:
                if self.budget.used_up(engine_id, time.monotonic()):
                    self._give_up(engine_id)
                    return
                if await self._try_once(engine_id):
                    return
        finally:
            self.core.replacing.discard(engine_id)

    async def _try_once(self, engine_id: int) -> bool:
        """Wait out the back-off and start one replacement; True once it came up (or
        the pool stopped meanwhile)."""
        delay = self.budget.delay(engine_id)
        delay = max(delay, self._id_free_at.get(engine_id, 0.0) - time.monotonic())
        await asyncio.sleep(min(delay, MAX_BACKOFF))
        if self.core.state is not PoolState.RUNNING:
            return True
        self._died_again.pop(engine_id, None)
        try:
            await self.core.restart_engine(engine_id)
        except Exception as exc:
            if isinstance(exc, EngineIdReserved):  # it came up, under another id: not a
                # failure; try again once the controller frees the id
                self._id_free_at[engine_id] = time.monotonic() + REGISTRATION_HOLD_SECONDS
            else:
                self.budget.ended(engine_id, await self._death_of(engine_id), time.monotonic())
            if self.core.state is PoolState.RUNNING:
                log.warning(
                    "pxpool: replacing engine %d of pool %r failed, trying again: %s",
                    engine_id,
                    self.core.name,
                    exc,
                )
            return False
        death = self._died_again.get(engine_id)
        if death is not None:  # it died before the pool released it
            self.budget.ended(engine_id, death, time.monotonic())
            log.warning(
                "pxpool: the replacement of engine %d of pool %r died while joining (%s)",
                engine_id,
                self.core.name,
                death.how,
            )
            return False
        self.budget.came_up(engine_id, time.monotonic())
        log.warning("pxpool: engine %d of pool %r replaced", engine_id, self.core.name)
        return True

    async def _death_of(self, engine_id: int) -> Death | None:
        """How the replacement whose start just failed died, once its launcher told
        (None: it did not die within ``DEATH_WAIT``, the start failed otherwise)."""
        deadline = time.monotonic() + DEATH_WAIT
        while engine_id not in self._died_again and time.monotonic() < deadline:
            await asyncio.sleep(DEATH_POLL)
        return self._died_again.get(engine_id)

    def _give_up(self, engine_id: int) -> None:
        """The end of a crash loop: the engine stays dead (``dead`` in health) and the
        log says why and how to start it again."""
        budget = self.budget
        if budget.limit:
            failed = budget.recent(engine_id, time.monotonic())
            reason = (
                f"{failed} of its replacements failed to come up within "
                f"restart_window={budget.window:g}s (max_restarts={budget.limit}), a crash loop"
            )
            then = "Fix the cause (pool.engine_deaths() says how each engine died), then restart"
        else:
            reason, then = "max_restarts=0", "Restart"
        self.given_up[engine_id] = reason
        log.error(
            "pxpool: engine %d of pool %r died (%s) and is not replaced: %s. %s it by hand "
            "with pool.restart_sync(%d).",
            engine_id,
            self.core.name,
            self.how_died(engine_id),
            reason,
            then,
            engine_id,
        )
