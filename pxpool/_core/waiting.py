"""Work that waits for an engine ends with an error, not a hang, when none will come.

ipyparallel's scheduler (and pxpool's task lane) keep work queued while a pool has no
engines, waiting for one to register. That is right while engines are starting or a
dead one is being replaced, and wrong once every engine died or was stopped and nothing
will start another (``restart = "never"``, or a crash loop the supervisor gave up on):
the caller would wait forever. :class:`EngineWait` tells the two apart; a waiter calls
:meth:`EngineWait.check` each time it wakes up without a result.

``NO_ENGINE_GRACE`` covers the moment between an engine's death reaching the hub (its
registration dropped) and reaching the supervisor (the replacement recorded in
:attr:`PoolCore.replacing`), which come from two different processes in either order.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import NoEnginesError

if TYPE_CHECKING:
    from .core import PoolCore

NO_ENGINE_GRACE = 5.0  # seconds with no engine and none on its way before work fails


class EngineWait:
    """How long one piece of work has waited with no engine in the pool."""

    def __init__(self, core: PoolCore, work: str, grace: float = NO_ENGINE_GRACE) -> None:
        self.core = core
        self.work = work
        self.grace = grace
        self._since: float | None = None  # monotonic time no engine was first seen

    def starved(self, now: float | None = None) -> bool:
        """True once the pool had no engine and none on its way for ``grace`` seconds."""
        if self.core.registered_ids() or self.core.engines_on_the_way():
            self._since = None
            return False
        now = time.monotonic() if now is None else now
        if self._since is None:
            self._since = now
        return now - self._since >= self.grace

    def check(self) -> None:
        """Raise :class:`~pxpool.NoEnginesError` once :meth:`starved`."""
        if self.starved():
            raise NoEnginesError(self.core.name, self.grace, self.work)
