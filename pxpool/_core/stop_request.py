"""Stopping a pool that a live process owns (a notebook): that process stops it.

``pxpool stop NAME`` (and JupyterLab's Stop button, which runs it) could tear the
pool's processes down from outside, but the notebook that owns the pool would see
its engines die under it: its supervisor starts replacements, its walltime watch
reports engines that "drained on SIGTERM", and its pool object still says running.
So the stopping process asks first (:func:`ask_owner`): it writes
``stop-request.json`` into the pool's runtime directory and waits, bounded, for the
directory to go. The owner looks for that file every ``LOOK_SECONDS``
(:class:`StopRequests`, on the pool's loop) and stops the pool the way ``pool.stop()``
does, logging who asked; afterwards its pool object says it was stopped from another
process. An owner that does not answer in time (blocked, hung) gets the stop from
outside, as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from .._entry.pids import alive
from . import runtime
from .state import PoolState

log = logging.getLogger("pxpool.pool")

STOP_REQUEST = "stop-request.json"
LOOK_SECONDS = 0.5
ANSWER_SECONDS = 20.0  # for the owner to have stopped its pool
ASK_POLL = 0.05


def ask_owner(name: str, owner_pid: int, timeout: float = ANSWER_SECONDS) -> bool:
    """Ask the live process ``owner_pid`` to stop pool ``name``; True once it did
    (the pool's directory is gone), False if it is dead or did not within ``timeout``."""
    directory = runtime.pool_dir(name)
    if owner_pid == os.getpid() or not alive(owner_pid) or not directory.is_dir():
        return False
    asked = {"pid": os.getpid(), "asked": time.time()}
    try:
        runtime.write_private_json(directory / STOP_REQUEST, asked)
    except OSError:
        return False  # the directory went meanwhile: the caller finds nothing to stop
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and directory.is_dir() and alive(owner_pid):
        time.sleep(ASK_POLL)
    if directory.is_dir():
        log.warning(
            "pxpool: pool %r: its owner (pid %d) did not stop it within %gs; stopping it from here",
            name,
            owner_pid,
            timeout,
        )
        return False
    return True


class Owned(Protocol):
    """What the owner's side reads and sets of its pool (a PoolCore)."""

    name: str
    state: PoolState
    stopped_by: str | None


class StopRequests:
    """The owner's side: while the pool runs, stop it when another process asks."""

    def __init__(self, core: Owned, stop: Callable[[], Awaitable[None]]) -> None:
        self.core = core
        self.stop = stop  # what pool.stop() does, on the pool's loop
        self.task: asyncio.Task[None] | None = None

    def watch(self) -> None:
        """Start looking (on the pool's loop; once per start)."""
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._look())

    async def _look(self) -> None:
        path = runtime.pool_dir(self.core.name) / STOP_REQUEST
        while self.core.state in (PoolState.STARTING, PoolState.RUNNING, PoolState.IDLE):
            await asyncio.sleep(LOOK_SECONDS)
            try:
                asked = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            who = f"process {asked.get('pid', '?')} (`pxpool stop` or JupyterLab's Stop)"
            log.warning("pxpool: pool %r is stopping: %s asked for it", self.core.name, who)
            self.core.stopped_by = who
            await self.stop()
            return
