"""Engines the hub dropped while their engine set still runs: lost, and replaced.

The hub drops an engine whose heartbeats stop for a few seconds. An engine that died is
told by its launcher too (its process ended) and the supervisor replaces it. Two kinds
of loss are not: an engine cut off from the controller (its host partitioned, its
process frozen), whose launcher runs on, and which the hub never takes back once the
link returns; and an engine that died alone in a batch job whose other engines run on
(``engines_per_job`` > 1), whose job does not end. Either would leave the pool short
for good. :class:`LostWatch` looks every ``LOST_POLL`` seconds for engines that one of
the pool's running engine sets owns, that the hub does not list and that no operation
of the pool (a start, a removal, a restart, a replacement) explains; one missing for
``LOST_GRACE`` seconds is reported once. With ``restart = "on-failure"`` the supervisor
then replaces it as a dead one: the restart stops what is left of its set (bounded)
and starts it again, retried with the supervisor's back-off while its host cannot be
reached.

Polling, not the client's unregistration notices: ipyparallel's client does not call
its registration callbacks for every engine it drops, so a notice can be missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._core.state import PoolState

if TYPE_CHECKING:
    from .._core.core import PoolCore

LOST_POLL = 1.0  # seconds between looks
# seconds an engine may be missing before it counts as lost: a death reaches the hub
# (from the nanny) a moment before the launcher tells it, and that path handles it
LOST_GRACE = 3.0
LOST_HOW = (
    "the controller dropped it (missed heartbeats: its host unreachable, its process "
    "frozen, or it died while the rest of its job ran on)"
)

OnLost = Callable[[tuple[int, ...]], None]  # the lost engine ids of one engine set


class LostWatch:
    """The poll described in the module docstring; runs on the pool's event loop."""

    def __init__(self, core: PoolCore, on_lost: OnLost) -> None:
        self.core = core
        self.on_lost = on_lost
        self.missing_since: dict[int, float] = {}  # engine id -> monotonic time first missed
        self.reported: set[int] = set()  # lost, told once, not registered since
        self._task: asyncio.Task[None] | None = None

    def watch(self) -> None:
        """Start the poll (again, if it ended with a pool that stopped or idled)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while self.core.state is PoolState.RUNNING:
            await asyncio.sleep(LOST_POLL)
            if self.core.state is PoolState.RUNNING:
                self.check(time.monotonic())

    def check(self, now: float) -> None:
        """One look: report the engines of each running set missing for ``LOST_GRACE``."""
        core, cluster = self.core, self.core.cluster
        if cluster is None:
            return
        registered = set(core.registered_ids())
        self.reported &= set(core.owner_ids()) - registered
        busy = core.replacing | core.joining | set(core.operations.snapshot())
        missing: set[int] = set()
        for set_id, ids in list(core.engine_sets.items()):
            launcher = cluster.engines.get(set_id)
            if launcher is None or launcher.state != "running":
                continue  # ended: the supervisor hears of it from the launcher
            gone = [i for i in ids if i not in registered and i not in busy]
            missing.update(gone)
            lost = [i for i in gone if now - self.missing_since.setdefault(i, now) >= LOST_GRACE]
            fresh = tuple(i for i in lost if i not in self.reported)
            if fresh:
                self.reported.update(fresh)
                self.on_lost(fresh)
        for engine_id in set(self.missing_since) - missing:
            del self.missing_since[engine_id]
