"""``pool.map`` partitions through shared memory, when every engine is on this host.

Over the network a partition is pickled by the client, copied by the controller and
the scheduler, and unpickled by the engine: for a large numeric frame those copies
cost about as much as the work. Here the client copies each input column (or
array) into one shared-memory segment before the first chunk, and a chunk is only
``(start, stop)`` plus the segments' names; the engine maps the segments and copies
its rows out block by block, so that ``f`` gets ordinary writable data.

Columns of any dtype qualify, laid out as plain arrays by :mod:`pxpool._data.columns`
(strings as UTF-8 text, categoricals as codes, nullable dtypes as values and mask,
anything else pickled in groups of rows); a MultiIndex, and arrays of objects with
more than one dimension, take the network path. Where the engines can read this
process's memory (:mod:`pxpool._data.direct`), plain columns are not copied at all:
the engines read their rows from the client's own arrays, held until the map is over.
Text and pickled columns cost time per row to encode (~20 ms per million strings), so
where the engines read the client they are encoded chunk by chunk as the chunks are
sent (:meth:`SharedInputs.spec`): the first chunk leaves after its own rows, and the
client encodes the next ones while the engines run (a string map on 2 engines: ~152 ms
-> ~145 ms), into buffers reused from map to map (:mod:`pxpool._data.spares`). Through
segments they are encoded whole, before the first chunk: a part per chunk would take a
slot (whole MiB) per chunk and array.

Lifetime: the segments are slots of the pool's arena (:mod:`pxpool._data.arena`),
free for the next map or push when the map returns, unlinked when it fails or the
pool stops; fresh segments (when the arena is full) are unlinked when the map ends.

This module is the client's half; the engine maps the segments and rebuilds its rows
in :func:`pxpool._data.agent.run_shared_part`, which reads the layouts made here.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import arena as _arena
from . import columns, shm
from . import direct as _direct
from .blocks import values_nbytes
from .spares import SPARES

__all__ = ["TAKEN", "SharedInputs", "eligible"]

# what went through shared memory in this process, counted: the layout kind of each
# column (pxpool._data.columns) and "replies" read from slots; tests and benches read it
TAKEN: Counter[str] = Counter()

# arrays of failed maps that engines may still be reading (pxpool._data.direct): a
# chunk that outlives its map reads what it read before, not freed memory
_ABANDONED: deque[list[np.ndarray]] = deque(maxlen=8)

Descriptor = shm.Descriptor
# how an engine finds one input's rows (see SharedInputs._export and agent._rebuild):
# ("numpy", column), ("series", column, index, name) or ("frame", [column], index, labels)
# with each column a pxpool._data.columns.Layout of Descriptors, and the index as
# ("range", start, step, name) or ("column", column, name)
Layout = tuple[Any, ...]


def _frame_ok(value: Any) -> bool:
    import pandas as pd

    index_ok = isinstance(value.index, pd.RangeIndex) or columns.supported(value.index)
    if isinstance(value, pd.DataFrame):
        return index_ok and value.columns.is_unique
    return index_ok and isinstance(value, pd.Series)


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return values_nbytes(value) + int(value.index.nbytes)


def eligible(kind: str, values: Sequence[Any]) -> bool:
    """True when every input can be laid out (:func:`pxpool._data.columns.supported`),
    is worth a segment, and there is room for it."""
    if kind == "numpy":
        ok = all(isinstance(v, np.ndarray) and columns.supported(v) for v in values)
    elif kind == "pandas":
        ok = all(_frame_ok(v) for v in values)
    else:
        return False
    nbytes = sum(_nbytes(v) for v in values) if ok else 0
    return ok and nbytes >= shm.THRESHOLD and shm.can_share(nbytes)


class SharedInputs:
    """The inputs of one map, copied into segments; ``spec(start, stop)`` names a chunk.

    Columns go into free slots of the pool's arena (:mod:`pxpool._data.arena`) when there
    are: their pages are already there on both sides, so a repeated map skips ~1.3 ms
    per MB of page faults. Else into fresh segments.
    """

    def __init__(
        self, values: Sequence[Any], prefix: str, engine_ids: list[int], direct: bool = False
    ) -> None:
        self.names: list[str] = []
        # with ``direct``, the engines read plain columns from this process's own arrays
        # (pxpool._data.direct), held here until the map is over
        self.held: list[np.ndarray] | None = [] if direct else None
        self.slots: list[_arena.Slot] = []
        self.layouts: list[Layout] = []
        self.kinds: list[str] = []  # each column's layout kind (what tests and benches read)
        # text and pickled columns, encoded for each chunk as it is sent (see spec)
        self.later: list[Any] = []
        self.buffers: list[np.ndarray] = []  # what those were encoded into (spares)
        self._later_kinds: dict[int, str] = {}
        self._arena = _arena.arena_for(prefix)
        self._engine_ids = engine_ids
        self._bytes = 0  # bytes of the arrays copied in
        try:
            for value in values:
                self.layouts.append(self._export(value))
        except BaseException:
            self.close(reuse=False)
            raise
        TAKEN.update(self.kinds)
        self._row_bytes = self._bytes / max(len(values[0]) if values else 0, 1)

    def _array(self, array: np.ndarray) -> Descriptor:
        self._bytes += array.nbytes
        shared, slot = self._arena.copy_in(np.ascontiguousarray(array), self._engine_ids)
        if slot is not None:
            self.slots.append(slot)
        else:
            self.names.append(shared[1][0])
        return shared

    def _column(self, values: Any) -> columns.Layout:
        """One column's layout with its arrays copied into segments, or left where they
        are for the engines to read (descriptors)."""
        layout = columns.encode_cheap(values)
        if layout is None and self.held is not None:  # text or pickled, read by the
            # engines from here: encoded chunk by chunk (spec); ~8 bytes a row for slots
            self.later.append(values)
            self._bytes += 8 * len(values)
            return ("later", (), len(self.later) - 1)
        kind, arrays, meta = layout or columns.encode(values)
        self.kinds.append(kind)
        return (kind, tuple(self._place(kind, i, a) for i, a in enumerate(arrays)), meta)

    def _place(self, kind: str, position: int, array: np.ndarray) -> Descriptor:
        """Arrays that an engine only copies rows of (:func:`columns.rows`) are read from
        here when the engines can; categories are decoded from a segment."""
        rows_only = kind in ("plain", "tz", "masked") or (kind == "cat" and position == 0)
        if self.held is None or not rows_only or not array.flags.c_contiguous:
            return self._array(array)
        self._bytes += array.nbytes
        TAKEN["direct"] += 1
        return self._hold(array)

    def _hold(self, array: np.ndarray) -> Descriptor:
        assert self.held is not None
        self.held.append(array)
        return ("direct", _direct.describe(array))

    def _part(self, number: int, start: int, stop: int) -> columns.Layout:
        """Rows ``start:stop`` of the text or pickled column ``number``, encoded for one
        chunk: the first chunk leaves once its own rows are encoded, and the client
        encodes the next ones while the engines run."""
        values = self.later[number]
        rows = values.iloc[start:stop] if hasattr(values, "iloc") else values[start:stop]
        kind, arrays, meta = columns.encode(rows, self._buffer)
        if number not in self._later_kinds:
            self._later_kinds[number] = kind
            self.kinds.append(kind)
            TAKEN[kind] += 1
        return ("part", tuple(self._hold(a) for a in arrays), (start, kind, meta))

    def _buffer(self, nbytes: int) -> np.ndarray:
        """A spare buffer for a chunk's encoded column, given back at :meth:`close`."""
        self.buffers.append(SPARES.take(nbytes))
        return self.buffers[-1]

    def _export(self, value: Any) -> Layout:
        if isinstance(value, np.ndarray):
            return ("numpy", self._column(value))
        import pandas as pd

        index = value.index
        if isinstance(index, pd.RangeIndex):
            index_layout: tuple[Any, ...] = ("range", index.start, index.step, index.name)
        else:
            index_layout = ("column", self._column(index), index.name)
        if isinstance(value, pd.Series):
            return ("series", self._column(value), index_layout, value.name)
        layouts = [self._column(value.iloc[:, i]) for i in range(value.shape[1])]
        return ("frame", layouts, index_layout, value.columns)

    def spec(self, start: int, stop: int) -> tuple[int, int, list[Layout]]:
        """What a chunk of rows ``start:stop`` sends instead of the rows; its own rows of
        text and pickled columns are encoded now."""
        if not self.later:
            return (start, stop, self.layouts)

        def encoded(column: columns.Layout) -> columns.Layout:
            return self._part(column[2], start, stop) if column[0] == "later" else column

        return (start, stop, [columns.each_column(lay, encoded) for lay in self.layouts])

    def reply_slot(self, rows: int) -> _arena.Slot | None:
        """A slot for the result of a chunk of ``rows`` rows (:mod:`pxpool._data.replies`),
        sized as their input (at least 1 MiB); None when the arena has no room."""
        nbytes = max(int(rows * self._row_bytes), _arena.ROUND)
        slot = self._arena.lease(nbytes, self._engine_ids)
        if slot is not None:
            self.slots.append(slot)
        return slot

    def kept(self, slot: _arena.Slot) -> None:
        """A result was read in place from ``slot``: it stays leased until :meth:`close`."""
        TAKEN["replies"] += 1
        TAKEN["in_place"] += 1
        assert slot in self.slots

    def replied(self, slot: _arena.Slot) -> None:
        """The result in ``slot`` was copied out: the slot is free for the next chunk."""
        TAKEN["replies"] += 1
        self.slots.remove(slot)
        self._arena.done(slot)

    def close(self, reuse: bool = True) -> None:
        """The map is over: unlink fresh segments, and give slots back for reuse, or
        retire them after a failure (chunks of it may still run on other engines)."""
        for name in self.names:
            shm.unlink(name)
        self.names.clear()
        if self.held is not None:
            if not reuse:  # engines may still read them: kept for a few more maps
                _ABANDONED.append(self.held)
            else:
                SPARES.give_back(self.buffers)
            self.held, self.buffers = [], []
        for slot in self.slots:
            if reuse:
                self._arena.done(slot)
            else:
                self._arena.retire(slot)
        self.slots.clear()
