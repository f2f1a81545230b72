"""The client side of ``pool.map``: cut, submit load-balanced, collect, combine.

At most two chunks per engine are in flight (one running, one waiting in the
scheduler), so an iterator is read only as fast as the engines consume it and a
slow engine simply takes fewer chunks. Every wait is bounded by results arriving,
and checks that the pool still runs.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import pickle
import secrets
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import ipyparallel as ipp
from ipyparallel.serialize import PrePickled

from .._data_errors import MapError, UnpicklableFunctionError, function_name
from .._fault_errors import TaskTimeout
from .._reliability import timeouts
from .._reliability.result_limit import ResultTooLarge
from ..errors import PoolStateError
from . import arena, shared_parts, shm
from . import chunking as ch
from .blocks import block_rows, part_of, row_bytes
from .progress import Progress
from .ready import done_result
from .shared_parts import SharedInputs, run_shared_part

if TYPE_CHECKING:
    from ..pool import Pool

WAIT_SLICE = 1.0  # seconds between checks that the pool still runs
TIMEOUT_POLL = 0.05  # seconds between checks of chunk run times when a timeout is set
INDEX_WAIT = 2.0  # how long a failed chunk's item index may take to arrive
# engine seconds per chunk: partitions run vectorised code with a fixed cost per call,
# so they get longer chunks; the balance cap in ChunkSizer still leaves 4 per engine
ITEM_TARGET, PART_TARGET = 0.02, 0.2
# a map over a range or sequence starts with an equal share per engine (up to this
# many bytes of items), each run for about ITEM_TARGET before it returns the rest:
# this measures the cost without a round trip of small probes, and tiny items are
# done in one chunk per engine
FIRST_BYTES = 4 << 20
# rows: the first share runs to its end if that takes under 3 x 0.5 s. A 1M-row frame
# takes ~0.5-0.6 s per engine here: with the items' 20 ms, or 0.2 s, it was cut in the
# middle on a busy machine, and three round trips per engine followed instead of none
PART_BUDGET = 0.5


class _Chunk:
    __slots__ = ("number", "start", "count", "args", "tries", "running_since", "submitted", "asked")

    def __init__(self, number: int, start: int, count: int, args: tuple[Any, ...] = ()) -> None:
        self.number, self.start, self.count = number, start, count
        self.args = args  # kept until the chunk is done, to send it again if its engine dies
        self.tries = 0
        self.running_since: float | None = None
        self.submitted = self.asked = time.monotonic()  # reset when sent again


class _Source:
    """Hands out chunks of the input: ``take(n)`` returns (start, count, apply args)."""

    def __init__(self, kind: str, values: Any, more: tuple[Any, ...]) -> None:
        self.kind = kind
        self.values = values
        self.more = more
        self.shared: SharedInputs | None = None  # partitions from shared memory, if set
        self.block = 0  # rows per call of f within a partition chunk (0: the whole chunk)
        self.position = 0
        self.total: int | None = None
        self._returned: deque[tuple[int, int]] = deque()  # (start, count) not done yet
        self._iterator: Iterator[Any] | None = None
        if kind in ("numpy", "pandas"):
            self.total = len(values)
            for other in more:
                if len(other) != self.total:
                    raise ValueError(
                        f"pool.map: every input must have {self.total} rows like the first; "
                        f"got one with {len(other)}"
                    )
        elif kind in ("range", "sequence") and all(
            ch.kind_of(m) in ("range", "sequence") for m in more
        ):
            self.total = min([len(values), *(len(m) for m in more)])
        else:
            self.kind = "iterator"
            self._iterator = iter(zip(values, *more, strict=False) if more else values)

    @property
    def remaining(self) -> int | None:
        if self.total is None:
            return None
        return self.total - self.position + sum(count for _, count in self._returned)

    def first_share(self, engines: int) -> int:
        """Items per engine in a map's first, budgeted chunks: an equal share of the
        input, at most about :data:`FIRST_BYTES` of it unless sending it costs nothing
        (a range, or rows in shared memory)."""
        assert self.total is not None
        share = max(math.ceil(self.total / max(engines, 1)), 1)
        if self.shared is not None or (self.kind == "range" and not self.more):
            return share
        if self.kind in ("numpy", "pandas"):
            return max(min(share, FIRST_BYTES // row_bytes((self.values, *self.more))), 1)
        sample = self._slice(0, min(self.total, 16))[2][1]
        try:
            per_item = len(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL)) / max(
                len(sample), 1
            )
        except Exception:  # unpicklable: the first chunk names the item (see _client)
            return 1
        return max(min(share, int(FIRST_BYTES // per_item)), 1)

    def give_back(self, start: int, count: int) -> None:
        """Items ``start .. start+count-1`` were sent but not done: hand them out again."""
        if count > 0:
            self._returned.append((start, count))

    def take(self, size: int, budget: float = 0.0) -> tuple[int, int, tuple[Any, ...]] | None:
        """The next chunk of at most ``size`` items or rows: (start, count, apply args).
        ``budget``: engine seconds after which the chunk may stop (ranges, sequences
        and partitions; see :mod:`pxpool._data.budget`)."""
        if self._returned:
            start, count = self._returned.popleft()
            if count > size:
                self._returned.appendleft((start + size, count - size))
            return self._slice(start, start + min(size, count), budget)
        start = self.position
        if self._iterator is not None:
            items = list(itertools.islice(self._iterator, size))
            if not items:
                return None
            self.position += len(items)
            return start, len(items), (ch.run_items, items, bool(self.more))
        assert self.total is not None
        stop = min(start + size, self.total)
        if stop <= start:
            return None
        self.position = stop
        return self._slice(start, stop, budget)

    def _slice(self, start: int, stop: int, budget: float = 0.0) -> tuple[int, int, tuple]:
        count = stop - start
        if self.shared is not None:
            spec = self.shared.spec(start, stop)
            return start, count, (run_shared_part, self.block, spec, budget)
        if self.kind in ("numpy", "pandas"):
            parts = [part_of(v, start, stop) for v in (self.values, *self.more)]
            flat = ch.flat_args(parts)
            return start, count, (ch.run_part, self.block, budget, len(parts), *flat)
        if self.more:
            items: Any = list(zip(*(v[start:stop] for v in (self.values, *self.more)), strict=True))
        else:
            items = self.values[start:stop]  # a range stays a range: a few bytes to send
            if self.kind == "sequence" and not isinstance(items, list | tuple):
                items = list(items)
        return start, count, (ch.run_items, items, bool(self.more), budget)


def _loads(payload: Any) -> list[Any]:
    return pickle.loads(payload)


def prepickle(f: Any) -> PrePickled:
    """Serialize ``f`` once per map (not once per chunk), failing early and clearly."""
    if not callable(f):
        raise TypeError(f"pool.map needs a callable as its first argument; got {f!r}")
    try:
        return PrePickled(f)
    except Exception as exc:
        raise UnpicklableFunctionError(function_name(f), f"{type(exc).__name__}: {exc}") from exc


def pool_map(
    pool: Pool,
    f: Any,
    values: Any,
    *more: Any,
    chunksize: int | str = "auto",
    ordered: bool = True,
    progress: bool | None = None,
    timeout: float | None = None,
    retries: int = 1,
) -> Any:
    """See :meth:`pxpool.data.pool_map`."""
    if chunksize != "auto" and (not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError(f"chunksize must be a positive int or 'auto'; got {chunksize!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0; got {retries!r}")
    kind = ch.kind_of(values)
    packed_f = prepickle(f)
    client = pool.client
    engines = len(client.ids)
    if engines == 0:
        raise PoolStateError(
            f"Pool {pool.name!r} has no engines to map over; add some with `pool.scale_sync(n)`."
        )
    source = _Source(kind, values, more)
    partitions = source.kind in ("numpy", "pandas")
    if partitions and chunksize == "auto":  # a fixed chunksize is the partition f sees
        source.block = block_rows((values, *more))
    if partitions and shared_parts.eligible(source.kind, (values, *more)):
        from ..data import local_engines  # data imports this module

        if local_engines(pool, list(client.ids)) == set(client.ids):
            prefix = shm.pool_prefix(pool.name)
            source.shared = SharedInputs((values, *more), prefix, list(client.ids))
    # the first chunks are budgeted equal shares (see FIRST_BYTES); not over an iterator
    budgeted = chunksize == "auto" and source.kind != "iterator"
    sizer = ch.ChunkSizer(
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
        probe=source.first_share(engines) if budgeted else 1,
    )
    view = client.load_balanced_view()
    token = secrets.token_hex(4)
    bar = Progress(source.total, progress, f"pool.map({function_name(f)})")
    inflight: dict[ipp.AsyncResult, _Chunk] = {}
    results: dict[int, Any] = {}
    arrival: list[int] = []
    number = 0
    exhausted = False
    try:
        if partitions and source.total == 0:  # f runs once on the empty input, for its type
            args = (ch.run_part, packed_f, f"{token}:0", 0, 0, 0.0, 1 + len(more))
            empty = _Chunk(0, 0, 0, (*args, *ch.flat_args([values, *more])))
            inflight[view.apply_async(*empty.args)] = empty
            exhausted, number = True, 1
        while True:
            # one first chunk per engine until a cost is measured, then two per engine
            while not exhausted and len(inflight) < (2 if sizer.measured else 1) * engines:
                budget = 0.0
                if budgeted and not sizer.measured:
                    budget = PART_BUDGET if partitions else ITEM_TARGET
                taken = source.take(sizer.next_size(source.remaining), budget)
                if taken is None:
                    exhausted = True
                    break
                start, count, (runner, *args) = taken
                chunk = _Chunk(
                    number, start, count, (runner, packed_f, f"{token}:{number}", start, *args)
                )
                inflight[view.apply_async(*chunk.args)] = chunk
                number += 1
            if not inflight:
                break
            done, _ = concurrent.futures.wait(
                list(inflight),
                timeout=WAIT_SLICE if timeout is None else TIMEOUT_POLL,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            if not done:
                pool._running()  # raises PoolStateError if the pool stopped meanwhile
                if timeout is not None:
                    _enforce_timeout(pool, f, inflight, timeout, partitions)
                continue
            for ar in sorted(done, key=lambda a: inflight[a].number):
                chunk = inflight.pop(ar)
                if _lost(ar):
                    if chunk.tries >= retries:
                        what = f"pool.map({function_name(f)}) chunk of {_items(chunk, partitions)}"
                        raise timeouts.lost_error(pool, ar, what, chunk.tries) from ar.exception()
                    chunk.tries += 1
                    chunk.running_since = None
                    chunk.submitted = chunk.asked = time.monotonic()
                    inflight[view.apply_async(*chunk.args)] = chunk  # its engine is gone
                    continue
                reply = _get(ar, pool, f, chunk, token, partitions)
                done_count = reply[1] if partitions else reply[2]
                sizer.record(done_count, reply[0])
                if done_count < chunk.count:  # a budgeted first chunk: the rest goes out again
                    source.give_back(chunk.start + done_count, chunk.count - done_count)
                    exhausted = False
                results[chunk.start] = ch.unpack(reply[2:]) if partitions else _loads(reply[1])
                arrival.append(chunk.start)
                bar.update(done_count)
    except BaseException:
        if source.shared is not None:  # chunks may still run: their slots are not reused
            _retire_inputs(client, source.shared)
        raise
    finally:
        bar.close()
        if source.shared is not None:
            source.shared.close()
    order = sorted(results) if ordered else arrival
    if partitions:
        return ch.combine(source.kind, [results[n] for n in order])
    out: list[Any] = []
    for n in order:
        out.extend(results[n])
    return out


def _retire_inputs(client: ipp.Client, shared: SharedInputs) -> None:
    """A failed map's input: unlink its slots, and have each engine unmap them once
    its queued chunks are over (so their memory goes now, not at the next map)."""
    retired = bool(shared.slots)
    shared.close(reuse=False)
    if retired and client.ids:
        try:
            client[list(client.ids)].apply_async(arena.drop_gone)
        except Exception:  # engines gone or the pool stopping: the pool's stop unmaps
            pass


def _items(chunk: _Chunk, partitions: bool) -> str:
    stop = chunk.start + chunk.count - 1
    return f"{'rows' if partitions else 'items'} {chunk.start}..{stop}"


def _lost(ar: ipp.AsyncResult) -> bool:
    """True when the chunk failed because its engine died, not because ``f`` raised."""
    try:
        error = ar.exception(timeout=0)
    except Exception:
        return False
    return error is not None and timeouts.engine_died(error)


def _enforce_timeout(
    pool: Pool, f: Any, inflight: dict[ipp.AsyncResult, _Chunk], timeout: float, part: bool
) -> None:
    """Stop the engine of a chunk that has run longer than ``timeout`` (TaskTimeout)."""
    now = time.monotonic()
    for ar, chunk in inflight.items():
        silent = chunk.running_since is None and now - chunk.submitted > timeout
        ask = silent and now - chunk.asked > timeouts.HUB_POLL
        chunk.asked = now if ask else chunk.asked
        engine = timeouts.running_engine(ar, ask_hub=ask)
        if engine is None or ar.done():
            continue
        if chunk.running_since is None:
            chunk.running_since = chunk.submitted if ask else now
        if now - chunk.running_since > timeout:
            action = timeouts.stop_task(pool, ar, engine)
            task = f"pool.map({function_name(f)}) chunk of {_items(chunk, part)}"
            raise TaskTimeout(task, engine, timeout, action)


def _get(ar: ipp.AsyncResult, pool: Pool, f: Any, chunk: _Chunk, token: str, part: bool) -> Any:
    """The chunk's reply, or a :class:`MapError` naming the engine and the item."""
    try:
        return done_result(ar)
    except (ipp.error.RemoteError, ipp.error.EngineError) as exc:
        engine_id = ar.engine_id if isinstance(ar.engine_id, int) else None
        what = f"{exc.ename}: {exc.evalue}" if isinstance(exc, ipp.error.RemoteError) else str(exc)
        index = None if part else _failed_index(ar, pool, engine_id, f"{token}:{chunk.number}")
        too_large = isinstance(exc, ResultTooLarge)
        error = MapError(
            function_name(f),
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


def _failed_index(ar: ipp.AsyncResult, pool: Pool, engine_id: int | None, token: str) -> int | None:
    """The failing item's index: published by the engine, or asked for if it is late."""
    deadline = time.monotonic() + INDEX_WAIT
    while time.monotonic() < deadline:
        data = ar.data if isinstance(ar.data, dict) else {}
        if "pxpool_failed_index" in data:
            return int(data["pxpool_failed_index"])
        time.sleep(0.01)
    if engine_id is None:
        return None
    try:
        return pool.client[engine_id].apply_async(ch.failed_index, token).get(timeout=INDEX_WAIT)
    except Exception:  # the engine is gone or busy: report the chunk's range instead
        return None
