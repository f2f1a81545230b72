"""What a ``pool.map`` chunk that did not bring its results becomes.

- ``f`` raised on the engine: :class:`~pxpool.MapError` naming the engine and the
  item (the index the engine recorded, :func:`pxpool._data.agent.failed_index`) or
  the partition's rows, with the engine's error as ``__cause__``;
- it ran longer than the map's ``timeout``: its engine is stopped,
  :class:`~pxpool.TaskTimeout`;
- its engine died under it: :func:`lost` (the mapper sends it again, or the pool's
  :class:`~pxpool._reliability.timeouts.TaskGuard` names the death);
- an item could not be sent: :class:`~pxpool.UnpicklableArgumentError` naming it.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipyparallel as ipp

from .._core.client import ResultTooLarge, pickle_error
from .._reliability import timeouts
from ..errors import MapError, TaskTimeout, UnpicklableArgumentError
from . import agent
from .ready import done_result
from .source import Chunk
from .wire import ChunkReply

if TYPE_CHECKING:
    from .._core.core import PoolCore
    from .._reliability.timeouts import TaskGuard

__all__ = [
    "MapNames",
    "enforce_timeout",
    "lost",
    "read_lane_reply",
    "read_reply",
    "unpicklable_item",
]

INDEX_WAIT = 2.0  # how long a failed chunk's item index may take to arrive
INDEX_POLL = 0.01


@dataclass(frozen=True)
class MapNames:
    """How one map and its chunks are named, in messages and on the engines."""

    function: str  # f's name
    token: str  # the map's: the engines record a chunk's failure under chunk_token()
    partitions: bool  # rows of arrays or pandas objects, not items

    def chunk_token(self, number: int) -> str:
        return f"{self.token}:{number}"

    def task(self, chunk: Chunk) -> str:
        """``pool.map(f) chunk of items 0..99``: the task a TaskTimeout or TaskLost names."""
        return f"pool.map({self.function}) chunk of {chunk.label(self.partitions)}"


def lost(ar: ipp.AsyncResult) -> bool:
    """True when the chunk failed because its engine died, not because ``f`` raised."""
    try:
        error = ar.exception(timeout=0)
    except Exception:
        return False
    return error is not None and timeouts.engine_died(error)


def enforce_timeout(
    tasks: TaskGuard, names: MapNames, inflight: dict[ipp.AsyncResult, Chunk], timeout: float
) -> None:
    """Stop the engine of a chunk that has run longer than ``timeout`` (TaskTimeout)."""
    now = time.monotonic()
    for ar, chunk in inflight.items():
        silent = chunk.running_since is None and now - chunk.submitted > timeout
        ask = silent and now - chunk.asked > timeouts.HUB_POLL
        chunk.asked = now if ask else chunk.asked
        engine = timeouts.running_engine(ar, ask_hub=ask, client=tasks.core.client)
        if engine is None or ar.done():
            continue
        if chunk.running_since is None:
            chunk.running_since = chunk.submitted if ask else now
        if now - chunk.running_since > timeout:
            action = tasks.stop_task(ar, engine)
            raise TaskTimeout(names.task(chunk), engine, timeout, action)


def read_reply(ar: ipp.AsyncResult, core: PoolCore, names: MapNames, chunk: Chunk) -> ChunkReply:
    """The chunk's reply, or a :class:`MapError` naming the engine and the item."""
    try:
        return ChunkReply.read(done_result(ar))
    except (ipp.error.RemoteError, ipp.error.EngineError) as exc:
        part = names.partitions
        engine_id = ar.engine_id if isinstance(ar.engine_id, int) else None
        what = f"{exc.ename}: {exc.evalue}" if isinstance(exc, ipp.error.RemoteError) else str(exc)
        token = names.chunk_token(chunk.number)
        index = None if part else _failed_index(ar, core, engine_id, token)
        too_large = isinstance(exc, ResultTooLarge)
        error = MapError(
            names.function,
            engine_id,
            chunk.start if part else index,
            (chunk.start, chunk.start + chunk.count),
            what,
            partition=part,
            hint="Map with a smaller chunksize= so each chunk's results fit."
            if too_large
            else None,
        )
        raise error from exc


def read_lane_reply(
    future: Future[Any], core: PoolCore, names: MapNames, chunk: Chunk
) -> ChunkReply:
    """A chunk's reply from the task lane, or a :class:`MapError` naming the engine and
    the item. The lane's own errors (TaskLost, TaskTimeout, NoEnginesError, a stopped
    pool) name the chunk already and are raised as they are."""
    error = future.exception(timeout=0)
    if error is None:
        return ChunkReply.read(future.result(timeout=0))
    if not isinstance(error, ipp.error.RemoteError):
        raise error
    part = names.partitions
    engine_id = getattr(error, "engine_id", None)
    if engine_id is None:
        engine_id = (error.engine_info or {}).get("engine_id")
    token = names.chunk_token(chunk.number)
    index = None if part else _failed_index(None, core, engine_id, token)
    hint = "Map with a smaller chunksize= so each chunk's results fit."
    raise MapError(
        names.function,
        engine_id,
        chunk.start if part else index,
        (chunk.start, chunk.start + chunk.count),
        f"{error.ename}: {error.evalue}",
        partition=part,
        hint=hint if isinstance(error, ResultTooLarge) else None,
    ) from error


def _failed_index(
    ar: ipp.AsyncResult | None, core: PoolCore, engine_id: int | None, token: str
) -> int | None:
    """The failing item's index: published by the engine (hub route), or asked for if
    it is late (or the chunk came on the lane, which publishes nothing)."""
    deadline = time.monotonic() + INDEX_WAIT
    while ar is not None and time.monotonic() < deadline:
        data = ar.data if isinstance(ar.data, dict) else {}
        if "pxpool_failed_index" in data:
            return int(data["pxpool_failed_index"])
        time.sleep(INDEX_POLL)
    if engine_id is None:
        return None
    try:
        asked = core.live_client()[engine_id].apply_async(agent.failed_index, token)
        index = asked.get(timeout=INDEX_WAIT)
    except Exception:  # the engine is gone or busy: report the chunk's range instead
        return None
    return None if index is None else int(index)


def unpicklable_item(chunk: Chunk) -> UnpicklableArgumentError | None:
    """The error naming the first item of ``chunk`` that cannot be sent, if any (only
    called once sending the chunk failed)."""
    for offset, item in enumerate(chunk.items() or ()):
        if (reason := pickle_error(item)) is not None:
            return UnpicklableArgumentError(
                "pool.map", f"item {chunk.start + offset}", item, reason
            )
    return None
