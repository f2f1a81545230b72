"""The client side of ``pool.map``: plan, submit load-balanced, collect, combine.

A map is planned once (:func:`plan_source`: the input and how its rows travel;
:func:`plan_sizer`: how chunks are sized), then one :class:`MapRun` keeps at most two
chunks per engine in flight (one running, one waiting), so an iterator is read only as
fast as the engines consume it and a slow engine simply takes fewer chunks. Every wait
is bounded by results arriving, and checks that the pool still runs. What a chunk that
failed becomes is :mod:`pxpool._data.failures`.

Chunks travel on the pool's task lane (``MapOptions.lane``, :mod:`pxpool._tasks`): a
chunk is a lane task whose engine-side runner (:mod:`pxpool._data.agent`) gets ``f``
and the chunk, and the lane enforces the map's timeout and retries. Without a lane
(``pxpool.data.pool_map`` called directly) they go through ipyparallel's scheduler,
and this module enforces both itself.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import ipyparallel as ipp
from ipyparallel.serialize import PrePickled

from .._core.client import SEND_ERRORS
from .._core.names import function_name, task_named
from .._core.waiting import EngineWait
from ..errors import UnpicklableArgumentError, UnpicklableFunctionError
from . import agent, replies, shared_parts, shm
from . import chunking as ch
from .arena import Slot
from .blocks import block_rows
from .failures import (
    MapNames,
    enforce_timeout,
    lost,
    read_lane_reply,
    read_reply,
    unpicklable_item,
)
from .options import MapOptions
from .placement import local_engines, readers
from .progress import Progress
from .shared_parts import SharedInputs
from .source import Chunk, Source
from .wire import flat_args

if TYPE_CHECKING:
    from .._core.core import PoolCore
    from .._reliability.timeouts import TaskGuard

__all__ = ["MapRun", "plan_sizer", "plan_source", "pool_map", "prepickle"]

WAIT_SLICE = 1.0  # seconds between checks that the pool still runs
ENGINE_POLL = 0.05  # seconds between looks for an engine while the pool has none
TIMEOUT_POLL = 0.05  # seconds between checks of chunk run times when a timeout is set
# engine seconds per chunk: partitions run vectorised code with a fixed cost per call,
# so they get longer chunks; the balance cap in ChunkSizer still leaves 4 per engine
ITEM_TARGET, PART_TARGET = 0.02, 0.2
# rows: the first share runs to its end if that takes under 3 x 0.5 s. A 1M-row frame
# takes ~0.5-0.6 s per engine here: with the items' 20 ms, or 0.2 s, it was cut in the
# middle on a busy machine, and three round trips per engine followed instead of none
PART_BUDGET = 0.5
# reply slots a map may hold with results read in place, until its join copies them
# (copying each result out as it came, and joining, was two copies: ~5 ms of a 14 ms
# map of a cheap expression over 1M rows here); results past this are copied out
IN_PLACE_BYTES = 256 << 20


def prepickle(f: Any) -> PrePickled:
    """Serialize ``f`` once per map (not once per chunk), failing early and clearly."""
    if not callable(f):
        raise TypeError(f"pool.map needs a callable as its first argument; got {f!r}")
    try:
        return PrePickled(f)
    except Exception as exc:
        raise UnpicklableFunctionError(function_name(f), f"{type(exc).__name__}: {exc}") from exc


def pool_map(
    pool: PoolCore,
    tasks: TaskGuard,
    f: Any,
    values: Any,
    *more: Any,
    options: MapOptions,
) -> Any:
    """See :func:`pxpool.data.pool_map`, which documents the options."""
    packed_f = prepickle(f) if options.lane is None else None
    if not callable(f):
        raise TypeError(f"pool.map needs a callable as its first argument; got {f!r}")
    client = pool.live_client()
    engines = len(await_an_engine(pool, f"pool.map({function_name(f)})"))
    source = plan_source(pool, client, values, more, options.chunksize)
    sizer = plan_sizer(source, engines, options.chunksize)
    names = MapNames(function_name(f), secrets.token_hex(4), source.partitions)
    run = MapRun(pool, tasks, client.load_balanced_view(), source, sizer, names, options)
    ok = False
    try:
        run.collect(f if options.lane is not None else packed_f)
        ok = True
        return run.combine()  # before the slots go back: results may be read in place
    except BaseException:
        run.results.clear()  # views of slots that are retired now
        if source.shared is not None:  # chunks may still run: their slots are not reused
            _retire_inputs(client, source.shared)
        raise
    finally:
        run.bar.close()
        pool.task_events.map_ended(run.progress, ok)
        if source.shared is not None:
            source.shared.close()


def await_an_engine(pool: PoolCore, work: str) -> list[int]:
    """The registered engines, once there is one (while none is on its way for
    ``NO_ENGINE_GRACE`` seconds: NoEnginesError)."""
    wait = EngineWait(pool, work)
    while not (ids := pool.registered_ids()):
        pool.running()  # PoolStateError if the pool stopped meanwhile
        wait.check()
        time.sleep(ENGINE_POLL)
    return ids


def plan_source(
    pool: PoolCore, client: ipp.Client, values: Any, more: tuple[Any, ...], chunksize: int | str
) -> Source:
    """The map's input; rows are called in cache-sized blocks (unless ``chunksize``
    fixes the partition ``f`` sees) and travel through shared memory when every
    engine is on this host and the input qualifies (:mod:`pxpool._data.shared_parts`)."""
    source = Source(ch.kind_of(values), values, more)
    if source.partitions and chunksize == "auto":
        source.block = block_rows((values, *more))
    if source.partitions and shared_parts.eligible(source.kind, (values, *more)):
        ids = list(client.ids)
        if local_engines(pool, ids) == set(ids):
            prefix, direct = shm.pool_prefix(pool.name), readers(pool, ids) == set(ids)
            source.shared = SharedInputs((values, *more), prefix, ids, direct)
    return source


def plan_sizer(source: Source, engines: int, chunksize: int | str) -> ch.ChunkSizer:
    """How the map's chunks are sized, for items or for rows."""
    partitions = source.partitions
    return ch.ChunkSizer(
        engines,
        source.total,
        chunksize=None if chunksize == "auto" else int(chunksize),
        target=PART_TARGET if partitions else ITEM_TARGET,
        # a chunk of items costs ~5-10 ms of round trip through ipyparallel: below a
        # full target of work per chunk, balancing loses more than it gains
        floor=PART_TARGET / 2 if partitions else ITEM_TARGET,
        # partitions: what is left is cut for 2 chunks per engine, not 4: vectorised
        # rows cost alike, and each chunk costs a round trip (1M rows: 9 chunks, not 15)
        per_engine=2 if partitions else 4,
        # the target sizes chunks, not a count cap: 200k tiny items run as one chunk
        # per engine (0.80-0.95x multiprocessing) rather than two (0.69-0.83x)
        max_size=1 << 24 if partitions else 1 << 20,
        # partitions: a chunk count that is a multiple of the engine count, fixed once
        # measured (when 1M rows on 2 engines were cut after small probes, 4 chunks
        # rather than 5, which left one engine running the fifth alone for ~20%)
        even=partitions,
        # the first chunks: an equal share per engine with a time budget; over an
        # iterator of unknown length, one item per engine (a heavy first item cannot
        # unbalance the map), then sizes grow from the measured cost
        probe=source.first_share(engines) if _budgeted(source, chunksize) else 1,
    )


def _budgeted(source: Source, chunksize: int | str) -> bool:
    """Whether the first chunks are budgeted equal shares (see
    :data:`pxpool._data.source.FIRST_BYTES`); never over an iterator."""
    return chunksize == "auto" and source.kind != "iterator"


class MapRun:
    """One running map: its chunks in flight, the results so far, and the steps of the
    loop that submits chunks and collects their replies."""

    def __init__(
        self,
        core: PoolCore,
        tasks: TaskGuard,
        view: ipp.LoadBalancedView,
        source: Source,
        sizer: ch.ChunkSizer,
        names: MapNames,
        options: MapOptions,
    ) -> None:
        self.core, self.tasks, self.view = core, tasks, view
        self.source, self.sizer, self.names, self.options = source, sizer, names, options
        self.engines = sizer.engines
        self.budgeted = _budgeted(source, options.chunksize)
        self.inflight: dict[Future[Any], Chunk] = {}  # AsyncResults, or the lane's futures
        self.reply_slots: dict[int, Slot] = {}  # chunk number -> the slot its result comes in
        self.results: dict[int, Any] = {}  # chunk start -> its results
        self.in_place = 0  # bytes of reply slots held: results read in place, not copied
        self.arrival: list[int] = []  # chunk starts in the order their results came
        self.number = 0  # chunks sent so far
        self.exhausted = False  # the source has handed out everything (for now)
        self.bar = Progress(source.total, options.progress, f"pool.map({names.function})")
        self.progress = core.task_events.map_started(f"pool.map({names.function})", source.total)
        self.engine_wait = EngineWait(core, f"pool.map({names.function})")

    def collect(self, f: Any) -> None:
        """Submit chunks of ``f`` and collect their replies until every item is done."""
        if self.source.partitions and self.source.total == 0:
            self._submit_empty(f)
        while True:
            self._submit(f)
            if not self.inflight:
                return
            for ar in sorted(self._wait(), key=lambda a: self.inflight[a].number):
                self._take_reply(ar)

    def combine(self) -> Any:
        """The map's result: chunks in input order (or in the order they came back)."""
        order = sorted(self.results) if self.options.ordered else self.arrival
        if self.source.partitions:
            results = [self.results.pop(n) for n in order]  # views go with the join
            return ch.combine(self.source.kind, results, in_place=self.in_place > 0)
        out: list[Any] = []
        for n in order:
            out.extend(self.results[n])
        return out

    def _submit_empty(self, f: Any) -> None:
        """An empty array or frame: ``f`` runs once on it, so the result has its type."""
        inputs = [self.source.values, *self.source.more]
        args = (agent.run_part, f, self.names.chunk_token(0), 0, 0, 0.0, len(inputs))
        self._send(Chunk(0, 0, 0, (*args, *flat_args(inputs))))
        self.exhausted, self.number = True, 1

    def _submit(self, f: Any) -> None:
        """One first chunk per engine until a cost is measured, then two per engine; two
        from the start when the chunks' text is encoded as they are sent (half shares:
        the client encodes the second while the engines run the first)."""
        source, sizer = self.source, self.sizer
        later = source.shared is not None and bool(source.shared.later)
        while (
            not self.exhausted
            and len(self.inflight) < (2 if sizer.measured or later else 1) * self.engines
        ):
            budget = 0.0
            if self.budgeted and not sizer.measured:
                budget = PART_BUDGET if source.partitions else ITEM_TARGET
            taken = source.take(sizer.next_size(source.remaining), budget)
            if taken is None:
                self.exhausted = True
                return
            start, count, (runner, *args) = taken
            token = self.names.chunk_token(self.number)
            if source.shared is not None and (slot := source.shared.reply_slot(count)):
                self.reply_slots[self.number] = slot
                args.append((slot.name, slot.capacity))  # the result comes back through it
            self._send(Chunk(self.number, start, count, (runner, f, token, start, *args)))
            self.number += 1

    def _send(self, chunk: Chunk) -> None:
        """Submit ``chunk``; an item that cannot be sent is named by its index."""
        try:
            sent = self._send_on_lane(chunk) if self.options.lane else self._send_on_hub(chunk)
        except (*SEND_ERRORS, UnpicklableArgumentError) as exc:
            error = unpicklable_item(chunk)
            if error is None:
                raise
            raise error from exc.__cause__ or exc  # the pickler's own error, as for a task
        self.inflight[sent] = chunk

    def _send_on_hub(self, chunk: Chunk) -> Future[Any]:
        with task_named(self.names.function):  # the user's function, not the runner
            ar: Future[Any] = self.view.apply_async(*chunk.args)
        return ar

    def _send_on_lane(self, chunk: Chunk) -> Future[Any]:
        """The chunk as a task of the pool's lane: the engine's runner gets ``f`` and the
        chunk's arguments; the lane enforces the map's timeout and retries."""
        assert self.options.lane is not None
        runner, f, *args = chunk.args
        return self.options.lane(
            f,
            tuple(args),
            {},
            self.options.timeout,
            self.options.retries,
            caller="pool.map",
            runner=f"{runner.__module__}:{runner.__name__}",
            label=self.names.task(chunk),
            chunk=True,
        )

    def _wait(self) -> set[Future[Any]]:
        """Chunks done within a slice of time (none: the pool is checked, and timeouts)."""
        timeout = self.options.timeout
        polled = timeout is not None and self.options.lane is None
        done, _ = concurrent.futures.wait(
            list(self.inflight),
            timeout=TIMEOUT_POLL if polled else WAIT_SLICE,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
        if not done:
            self.core.running()  # raises PoolStateError if the pool stopped meanwhile
            self.engine_wait.check()  # ... or NoEnginesError if no engine will come
            if timeout is not None and self.options.lane is None:  # (the lane enforces it)
                enforce_timeout(self.tasks, self.names, self.inflight, timeout)
        return done

    def _take_reply(self, done: Future[Any]) -> None:
        """A chunk's reply: its results kept, what it did not do handed out again."""
        chunk = self.inflight.pop(done)
        if self.options.lane is not None:
            reply = read_lane_reply(done, self.core, self.names, chunk)
        elif lost(done):
            self._send_again(done, chunk)
            return
        else:
            reply = read_reply(done, self.core, self.names, chunk)
        self.sizer.record(reply.done, reply.seconds)
        if reply.done < chunk.count:  # a budgeted first chunk: the rest goes out again
            self.source.give_back(chunk.start + reply.done, chunk.count - reply.done)
            self.exhausted = False
        slot = self.reply_slots.pop(chunk.number, None)
        if slot is not None and reply.body[0] == replies.TAG:
            self.results[chunk.start] = self._read_slot(reply.body, slot)
        else:
            self.results[chunk.start] = reply.results()
            if slot is not None and self.source.shared is not None:
                self.source.shared.replied(slot)
        self.arrival.append(chunk.start)
        self.bar.update(reply.done)
        self.progress.advance(reply.done)

    def _read_slot(self, body: tuple[Any, ...], slot: Slot) -> Any:
        """A result from its reply slot: read in place while the map holds under
        ``IN_PLACE_BYTES`` of slots (the join copies it; the slot goes back with the
        map's inputs), else copied out with the slot given back at once."""
        assert self.source.shared is not None
        if self.in_place + slot.capacity <= IN_PLACE_BYTES:
            result = replies.read_in_place(body, slot.mapping)
            if result is not None:
                self.in_place += slot.capacity
                self.source.shared.kept(slot)
                return result
        result = replies.read(body, slot.mapping)
        self.source.shared.replied(slot)
        return result

    def _send_again(self, ar: ipp.AsyncResult, chunk: Chunk) -> None:
        """The chunk's engine died under it: run it elsewhere, or TaskLost once retried."""
        if chunk.tries >= self.options.retries:
            raise self.tasks.lost_error(ar, self.names.task(chunk), chunk.tries) from ar.exception()
        chunk.sent_again()
        self._send(chunk)


def _retire_inputs(client: ipp.Client, shared: SharedInputs) -> None:
    """A failed map's input: unlink its slots, and have each engine unmap them once
    its queued chunks are over (so their memory goes now, not at the next map)."""
    retired = bool(shared.slots)
    shared.close(reuse=False)
    if retired and client.ids:
        try:
            client[list(client.ids)].apply_async(agent.drop_gone)
        except Exception:  # engines gone or the pool stopping: the pool's stop unmaps
            pass
