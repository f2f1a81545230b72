"""Self-healing: notice engines that die, say how, replace them, replay their setup.

The pool's cluster reports engine sets that stop without being asked
(:meth:`pxpool._core.cluster.PxCluster.add_death_listener`). The supervisor records how
each engine died (signal, exit code, out of memory when the kernel's OOM killer
counted a kill) and, with ``restart = "on-failure"`` in the profile, starts a new
engine under the same id after ``restart_backoff`` seconds (doubling while
replacements of that id keep failing, up to ``MAX_BACKOFF``), at most
``max_restarts`` times per id over the pool's life.

Engines that join later (restarts, ``scale``) first replay what the user set up on
every engine: names pushed to all engines with ``pool.push`` and code run with
``pool.setup(code)`` / ``%%px --setup``, in the order they happened. ipyparallel
leaves this to the user (its issue #706).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core.startup import REGISTRATION_HOLD_SECONDS
from .._core.state import PoolState
from ..engines.cgroups import engine_group, oom_kills, oom_kills_since_joined
from ..errors import EngineIdReserved
from .walltime import walltime_exit

if TYPE_CHECKING:
    from .._core.core import PoolCore

log = logging.getLogger("pxpool.supervisor")
PushTo = Callable[[dict[str, Any], list[int]], None]  # (namespace, engine ids)
# the controller reserves the id of an engine that died while registering this long;
# a big pool on a busy machine needs that long to register (32 engines on 2 cores: 16 s)
MAX_BACKOFF = 30.0  # seconds: the longest wait before trying to replace an engine again
REPLAY_TIMEOUT = 120.0  # seconds for a new engine to replay the pool's setup


@dataclass(frozen=True)
class Death:
    engine_ids: tuple[int, ...]
    how: str  # "killed by SIGKILL", "exited with code 3", "out of memory: ..."
    exit_code: int | None
    when: float


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
        self.restarts: Counter[int] = Counter()
        self.failed_in_a_row: Counter[int] = Counter()
        self._replacing: set[int] = set()  # ids with a _replace loop running
        self._died_again: set[int] = set()  # ...whose new engine died meanwhile
        self._id_free_at: dict[int, float] = {}  # monotonic time the controller frees an id
        self._oom_seen = oom_kills()
        self._clusters: set[int] = set()
        self.ids_by_uuid: dict[str, int] = {}  # the client forgets a dead engine's uuid

    def engine_of(self, uuid: str | None) -> int | None:
        return self.ids_by_uuid.get(uuid) if uuid else None

    def watch(self) -> None:
        cluster = self.core.cluster
        if cluster is not None and id(cluster) not in self._clusters:
            self._clusters.add(id(cluster))
            self._oom_seen = oom_kills()
            cluster.add_death_listener(self.engine_set_died)

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
        drained = walltime_exit(self.core.name, ids)  # left on a walltime or preemption signal
        how = drained or how
        death = Death(ids, how, stop_data.get("exit_code"), time.time())
        for engine_id in ids:
            self.deaths[engine_id] = death
        log.warning("pxpool: engines %s of pool %r died: %s", list(ids), self.core.name, how)
        if drained or self.core.profile.restart != "on-failure":
            return  # a drained engine did not fail: replace_on_walltime replaces it
        if ids[0] in self._replacing:
            self._died_again.add(ids[0])  # while being replaced: that replacement goes again
        else:
            asyncio.ensure_future(self._replace(ids[0], how))

    def engines_joined(self, core: PoolCore, engine_ids: list[int]) -> None:
        """Engine hook: watch the pool's engines for deaths; replay the setup on new
        engines."""
        known = core.engine_uuids()
        self.ids_by_uuid.update({known[i]: i for i in engine_ids if i in known})
        loop = core.loop.loop
        assert loop is not None
        loop.call_soon_threadsafe(self.watch)
        if self.setup.steps:
            self.setup.replay(core, self.replay_push, engine_ids)

    def how_died(self, engine_id: int | None) -> str:
        death = self.deaths.get(engine_id) if engine_id is not None else None
        return death.how if death else "it stopped answering and the controller dropped it"

    async def _replace(self, engine_id: int, how: str) -> None:
        """Start a new engine under ``engine_id`` until one runs, the pool stops, or
        ``max_restarts`` is used up; one such loop per id at a time."""
        self._replacing.add(engine_id)
        try:
            while self.core.state is PoolState.RUNNING:
                if self.restarts[engine_id] >= self.core.profile.max_restarts:
                    log.error(
                        "pxpool: engine %d of pool %r died (%s) and is not replaced: it was "
                        "restarted max_restarts=%d times already; restart it with "
                        "pool.restart_sync(%d).",
                        engine_id,
                        self.core.name,
                        how,
                        self.core.profile.max_restarts,
                        engine_id,
                    )
                    return
                delay = self.core.profile.restart_backoff * (2 ** self.failed_in_a_row[engine_id])
                delay = max(delay, self._id_free_at.get(engine_id, 0.0) - time.monotonic())
                await asyncio.sleep(min(delay, MAX_BACKOFF))
                if self.core.state is not PoolState.RUNNING:
                    return
                self._died_again.discard(engine_id)
                self.restarts[engine_id] += 1
                try:
                    await self.core.restart_engine(engine_id)
                except Exception as exc:
                    self.failed_in_a_row[engine_id] += 1
                    if isinstance(exc, EngineIdReserved):  # wait until the controller frees it
                        self._id_free_at[engine_id] = time.monotonic() + REGISTRATION_HOLD_SECONDS
                    if self.core.state is PoolState.RUNNING:
                        log.warning(
                            "pxpool: replacing engine %d of pool %r failed, trying again: %s",
                            engine_id,
                            self.core.name,
                            exc,
                        )
                    continue
                self.failed_in_a_row[engine_id] = 0
                if engine_id not in self._died_again:
                    log.warning("pxpool: engine %d of pool %r replaced", engine_id, self.core.name)
                    return
        finally:
            self._replacing.discard(engine_id)
